"""muster.v1: messages and service stubs generated from the protos at build
time (common_pb2, campaign_pb2, campaign_pb2_grpc, schedule_pb2, ...)."""
