//! Benchmark: seed the large sandbox fleet (50 accounts x 4 regions x 50
//! instances = 10,000) and list it back through the sim, the way a worker
//! discovers it (EC2 DescribeInstances joined with SSM
//! DescribeInstanceInformation, per account and region, with the execution
//! role). Prints the figures for BENCHMARKS.md.
//!
//!     cargo bench -p muster-sim --bench seed_large --profile dev

use std::time::Instant;

use futures::StreamExt as _;
use muster_sim::seed::fleet_file::FleetFile;
use muster_sim::seed::{SeedOptions, seed};
use muster_sim::testkit::{HUB_ACCOUNT, Sandbox, test_tunables, workspace_root};

#[tokio::main]
async fn main() {
    let shards: usize = std::env::var("MUSTER_MOTO_SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let sb = Sandbox::start_sharded(test_tunables(), shards).await;
    let fleet = FleetFile::load(&workspace_root().join("deploy/local/fleet-large.toml")).expect("fleet file");
    let started = Instant::now();
    let state = seed(
        &fleet,
        &SeedOptions {
            endpoint: sb.endpoint(),
            target_template: workspace_root().join("deploy/cloudformation/target-account.yaml"),
        },
    )
    .await
    .expect("seeding");
    let seeded = started.elapsed();
    let seeded_count = state.instances().count();

    let listing = Instant::now();
    let hub = sb.hub_config("us-east-1");
    let worker = sb
        .assume(&hub, &format!("arn:aws:iam::{HUB_ACCOUNT}:role/muster-worker"), None)
        .await
        .expect("worker role");
    let worker = sb.config_with("us-east-1", worker);
    let scopes: Vec<(String, String)> = state
        .accounts
        .iter()
        .flat_map(|a| a.instances.keys().map(move |r| (a.id.clone(), r.clone())))
        .collect();
    let counts: Vec<(usize, usize)> = futures::stream::iter(scopes.into_iter().map(|(account, region)| {
        let sb = &sb;
        let worker = worker.clone();
        let external_id = state.external_id.clone();
        async move {
            let arn = format!("arn:aws:iam::{account}:role/muster-execution");
            let creds = sb
                .assume_execution(&worker, &arn, Some(&external_id))
                .await
                .expect("execution role");
            let config = sb.config_with(&region, creds);
            let ec2 = aws_sdk_ec2::Client::new(&config);
            let mut instances = 0;
            let mut ids: Vec<String> = Vec::new();
            let mut token = None;
            loop {
                let page = ec2
                    .describe_instances()
                    .set_next_token(token)
                    .send()
                    .await
                    .expect("DescribeInstances");
                for reservation in page.reservations() {
                    for instance in reservation.instances() {
                        instances += 1;
                        ids.extend(instance.instance_id().map(str::to_owned));
                    }
                }
                token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
            // As the worker does: ask SSM about the instances EC2 listed.
            let ssm = aws_sdk_ssm::Client::new(&config);
            let mut managed = 0;
            for chunk in ids.chunks(50) {
                let page = ssm
                    .describe_instance_information()
                    .max_results(50)
                    .instance_information_filter_list(
                        aws_sdk_ssm::types::InstanceInformationFilter::builder()
                            .key(aws_sdk_ssm::types::InstanceInformationFilterKey::InstanceIds)
                            .set_value_set(Some(chunk.to_vec()))
                            .build()
                            .expect("key and values"),
                    )
                    .send()
                    .await
                    .expect("DescribeInstanceInformation");
                managed += page.instance_information_list().len();
            }
            (instances, managed)
        }
    }))
    .buffer_unordered(8)
    .collect()
    .await;
    let listed = listing.elapsed();
    let instances: usize = counts.iter().map(|c| c.0).sum();
    let managed: usize = counts.iter().map(|c| c.1).sum();
    let total = started.elapsed();

    println!(
        "seed_large: {} accounts, {seeded_count} instances, {shards} moto process(es)",
        state.accounts.len()
    );
    println!("  seed:       {:>7.1} s", seeded.as_secs_f64());
    println!(
        "  list back:  {:>7.1} s  (EC2 {instances} instances, SSM {managed} managed, {} scopes)",
        listed.as_secs_f64(),
        counts.len()
    );
    println!("  total:      {:>7.1} s  (goal: under 120 s)", total.as_secs_f64());
    assert_eq!(seeded_count, 10_000, "the large fleet has 10,000 instances");
    assert_eq!(instances, 10_000, "listing finds every instance");
}
