# The compiled face of h2events.py: the events are extension types (cheap to make, several per request).

cdef class StreamEnded:
    cdef public long stream_id

cdef class RequestReceived:
    cdef public long stream_id
    cdef public list headers
    cdef public object stream_ended

cdef class ResponseReceived:
    cdef public long stream_id
    cdef public list headers
    cdef public object stream_ended

cdef class InformationalResponseReceived:
    cdef public long stream_id
    cdef public list headers

cdef class TrailersReceived:
    cdef public long stream_id
    cdef public list headers
    cdef public object stream_ended

cdef class DataReceived:
    cdef public long stream_id
    cdef public bytes data
    cdef public long flow_controlled_length
    cdef public object stream_ended

cdef class StreamReset:
    cdef public long stream_id
    cdef public object error_code
    cdef public bint remote_reset

cdef class WindowUpdated:
    cdef public long stream_id
    cdef public long delta

cdef class ChangedSetting:
    cdef public object setting
    cdef public object original_value
    cdef public long long new_value

cdef class RemoteSettingsChanged:
    cdef public dict changed_settings

cdef class SettingsAcknowledged:
    cdef public dict changed_settings

cdef class PingReceived:
    cdef public bytes ping_data

cdef class PingAckReceived:
    cdef public bytes ping_data

cdef class ConnectionTerminated:
    cdef public object error_code
    cdef public long last_stream_id
    cdef public bytes additional_data
