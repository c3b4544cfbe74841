"""mizzen-cni: traffic capture without init containers.

A chained CNI plugin (spec 1.0) that programs Istio's capture rules inside each
pod's network namespace, and the node agent that installs it on every node.
"""
