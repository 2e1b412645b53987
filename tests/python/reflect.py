"""A Python grpcio client that knows nothing of muster's protos: it learns
them from the controller's server reflection (grpcio-reflection speaks
v1alpha), lists the services, and calls GetCampaign with message classes
built from the reflected descriptors.

    reflect.py HOST:PORT CA_PEM TOKEN CAMPAIGN_ID

Prints one JSON object: the services, the campaign's id, state and target
count as decoded, and the whole campaign in protobuf's own JSON mapping
(json_format, fields at their defaults included), which `muster -o json`
must match. The whole-system test tests/tests/ecosystem.rs runs
it against the sandbox.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> None:
    address, ca, token, campaign_id = sys.argv[1:5]
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(open(ca, "rb").read()),
        grpc.access_token_call_credentials(token),
    )
    # The dev certificate names localhost.
    channel = grpc.secure_channel(
        address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )
    database = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("muster.v1.CampaignService")
    method = service.methods_by_name["GetCampaign"]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/muster.v1.CampaignService/GetCampaign",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    answer = call(request_class(campaign_id=campaign_id), timeout=30)
    state = pool.FindEnumTypeByName("muster.v1.CampaignState")
    print(
        json.dumps(
            {
                "services": services,
                "campaign_id": answer.campaign.id,
                "state": state.values_by_number[answer.campaign.state].name,
                "total": answer.campaign.counters.total,
                "campaign_json": json_format.MessageToDict(
                    answer.campaign, always_print_fields_with_no_presence=True
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
