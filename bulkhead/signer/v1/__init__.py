"""Generated gRPC/protobuf code for the Bulkhead contract (make protos). Do not edit."""
