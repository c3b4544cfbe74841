#!/bin/sh
# ca_pb2.py is generated from ca.proto and committed (it is our code): the sidecar and the controller
# import it at run time and neither should need grpcio-tools or protoc installed. Run this after
# editing ca.proto (needs grpcio-tools in the venv).
set -e
cd "$(dirname "$0")"
python -m grpc_tools.protoc -I. -I"$(python -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')" --python_out=. ca.proto
# Generated code keeps protoc's style: linters skip it.
{ printf '# ruff: noqa\n# mypy: ignore-errors\n'; cat ca_pb2.py; } > ca_pb2.py.tmp && mv ca_pb2.py.tmp ca_pb2.py
