//! The sim answers a repeated DescribeInstances with moto's last answer to
//! the same request until an EC2 change reaches that scope through the sim,
//! so a fleet is not described by moto (milliseconds per instance) again and
//! again. This test changes moto behind the sim's back to see which answer
//! it gets.

use aws_credential_types::Credentials;
use aws_sdk_ec2::operation::RequestId as _;
use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, Tag, TagSpecification};
use muster_sim::testkit::Sandbox;

const REGION: &str = "us-east-1";

/// (instance id, its Owner tag) for every instance tagged Role=web, and the
/// answer's request id.
async fn web_instances(ec2: &aws_sdk_ec2::Client) -> (Vec<(String, String)>, String) {
    let answer = ec2
        .describe_instances()
        .filters(Filter::builder().name("tag:Role").values("web").build())
        .send()
        .await
        .expect("DescribeInstances");
    let mut found: Vec<(String, String)> = answer
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let owner = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("Owner"))
                .and_then(|t| t.value())
                .unwrap_or_default();
            (i.instance_id().unwrap_or_default().to_owned(), owner.to_owned())
        })
        .collect();
    found.sort();
    (found, answer.request_id().unwrap_or_default().to_owned())
}

async fn tag_owner(ec2: &aws_sdk_ec2::Client, instance: &str, owner: &str) {
    ec2.create_tags()
        .resources(instance)
        .tags(Tag::builder().key("Owner").value(owner).build())
        .send()
        .await
        .expect("CreateTags");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_listing_gets_the_kept_answer_until_ec2_changes_through_the_sim() {
    let sb = Sandbox::start().await;
    let through_sim = aws_sdk_ec2::Client::new(&sb.hub_config(REGION));
    // Same account (the hub key acts in moto's default account), no sim.
    let behind = aws_sdk_ec2::Client::new(&muster_common::aws::fixed(
        &sb.motos[0].url,
        REGION,
        Credentials::new("AKIAMUSTERTESTHUB", "muster-test", None, None, "test-hub"),
        aws_smithy_types::retry::RetryConfig::disabled(),
    ));
    through_sim
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(InstanceType::T3Micro)
        .min_count(2)
        .max_count(2)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Role").value("web").build())
                .build(),
        )
        .send()
        .await
        .expect("RunInstances");

    let (first, first_id) = web_instances(&through_sim).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|(_, owner)| owner.is_empty()));

    // moto changes behind the sim: the sim cannot know, and answers as before,
    // with a request id of its own, as AWS gives every answer.
    tag_owner(&behind, &first[0].0, "ops").await;
    let (second, second_id) = web_instances(&through_sim).await;
    assert_eq!(second, first, "the kept answer");
    assert!(
        !second_id.is_empty() && second_id != first_id,
        "{first_id} / {second_id}"
    );
    let (direct, _) = web_instances(&behind).await;
    assert_eq!(direct[0].1, "ops", "moto itself has the tag");

    // A change through the sim: the next listing is moto's own again, with
    // the change made behind its back too.
    tag_owner(&through_sim, &first[1].0, "dev").await;
    let (third, _) = web_instances(&through_sim).await;
    let owners: Vec<&str> = third.iter().map(|(_, owner)| owner.as_str()).collect();
    assert_eq!(owners, ["ops", "dev"], "{third:?}");
}
