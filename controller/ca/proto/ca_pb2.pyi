# Types of the generated ca_pb2 (written by hand: the two messages and the fields Mizzen uses).
from google.protobuf import struct_pb2
from google.protobuf.message import Message

class IstioCertificateRequest(Message):
    csr: str
    validity_duration: int
    @property
    def metadata(self) -> struct_pb2.Struct: ...
    def __init__(
        self, *, csr: str = ..., validity_duration: int = ..., metadata: struct_pb2.Struct | None = ...
    ) -> None: ...

class IstioCertificateResponse(Message):
    @property
    def cert_chain(self) -> list[str]: ...
    def __init__(self, *, cert_chain: list[str] | None = ...) -> None: ...
