//! Benchmark (issue 21): the web console on the large fleet. A campaign of
//! 10,000 targets (50 accounts x 4 regions x 50 instances, 2 of each 50
//! failing) runs while a real headless Chromium keeps its page open; the
//! page is also loaded again and again while it runs.
//!
//! Printed: the first render of the campaign page (navigation start to
//! DOMContentLoaded and to load, from the browser's Navigation Timing),
//! median and worst over the loads; each live update's time in script and
//! until the frame after it was drawn (median, p99, worst, count); the page's
//! JavaScript heap and DOM size at the start, at their peak and at the end;
//! and the same first render for the 10,000-target plan and the ended
//! campaign.
//!
//!     cargo build --release --bins
//!     cargo bench -p muster-tests --bench console
//!
//! MUSTER_BENCH_ACCOUNTS (50) and MUSTER_BENCH_COMMAND_SECONDS (90: the page stays
//! live for minutes) change
//! the fleet and the command; MUSTER_BENCH_WORKERS (2) the fleet of workers.

use std::time::{Duration, Instant};

use muster_proto::v1::{CampaignState, PlanCampaignRequest, RateControl};
use muster_tests::browser::Browser;
use muster_tests::client::{get, script_spec, submit};
use muster_tests::procs::{System, SystemOptions};
use serde_json::Value;

const REGIONS: [&str; 4] = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"];

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn fleet(accounts: u32, seconds: f64) -> String {
    let regions = REGIONS.map(|r| format!("\"{r}\"")).join(", ");
    let mut fleet = String::from(
        "name = \"console\"\nexternal_id = \"ext-console\"\noutput_bucket = \"muster-output\"\nresults_bucket = \"muster-results\"\n",
    );
    for i in 0..accounts {
        fleet.push_str(&format!(
            "\n[[accounts]]\nname = \"a{i:03}\"\nregions = [{regions}]\n  [[accounts.instances]]\n  count = 48\n  \
             tags = {{ Role = \"web\", \"muster-sim:duration\" = \"{seconds}\" }}\n  [[accounts.instances]]\n  count = 2\n  \
             tags = {{ Role = \"web\", \"muster-sim:duration\" = \"{seconds}\", \"muster-sim:exit-code\" = \"1\" }}\n"
        ));
    }
    fleet
}

/// Milliseconds from navigation start to DOMContentLoaded and to load.
async fn load(browser: &Browser, url: &str) -> (f64, f64) {
    browser.goto(url).await;
    let timing = browser
        .eval(
            "const n = performance.getEntriesByType('navigation')[0]; \
             return [n.domContentLoadedEventEnd - n.startTime, n.loadEventEnd - n.startTime];",
        )
        .await;
    (
        timing[0].as_f64().unwrap_or(f64::NAN),
        timing[1].as_f64().unwrap_or(f64::NAN),
    )
}

/// JS heap (MiB) and element count of the page now.
async fn memory(browser: &Browser) -> (f64, u64) {
    let v = browser
        .eval("return [performance.memory.usedJSHeapSize / 1048576, document.getElementsByTagName('*').length];")
        .await;
    (v[0].as_f64().unwrap_or(0.0), v[1].as_u64().unwrap_or(0))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn summary(label: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "{label}: n={} median {:.1} ms, p99 {:.1} ms, worst {:.1} ms",
        values.len(),
        quantile(&values, 0.5),
        quantile(&values, 0.99),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main]
async fn main() {
    let accounts: u32 = env("MUSTER_BENCH_ACCOUNTS", 50);
    let seconds: f64 = env("MUSTER_BENCH_COMMAND_SECONDS", 90.0);
    let workers: usize = env("MUSTER_BENCH_WORKERS", 2);
    let started = Instant::now();
    let mut system = System::start(
        &fleet(accounts, seconds),
        SystemOptions {
            workers,
            lease_ttl: 30,
            moto_shards: 2,
            controller_args: ["--max-tasks-per-scope", "100", "--max-queued", "2000"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    )
    .await;
    let targets = accounts as usize * REGIONS.len() * 50;
    println!(
        "sandbox: {targets} instances in {} scopes, {workers} workers, seeded in {:.0}s",
        accounts as usize * REGIONS.len(),
        started.elapsed().as_secs_f64()
    );
    let ids: Vec<String> = system.fleet.accounts.iter().map(|a| a.id.clone()).collect();
    let mut spec = script_spec(&ids, &REGIONS, &["echo patched"], &[]);
    spec.name = "console-bench".into();
    spec.confirm_large = true;
    spec.rate = Some(RateControl {
        max_concurrency: "100%".into(),
        batch_size: 50,
        ..Default::default()
    });

    let base = format!("https://localhost:{}", system.campaign_port());
    let browser = Browser::start("bench").await;
    browser.sign_in(&base, &system.creds.submit_token).await;

    // The plan first: it warms the sim's EC2 answers, and its page is the
    // plan view of 10,000 targets.
    let plan = system
        .client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec.clone()),
            wait_seconds: 600,
        })
        .await
        .expect("the plan")
        .into_inner();
    let (dom, loaded) = load(&browser, &format!("{base}/console/campaigns/{}", plan.campaign_id)).await;
    println!("plan page ({targets} targets): DOMContentLoaded {dom:.0} ms, load {loaded:.0} ms");

    let id = submit(&mut system.client, spec).await;
    let page = format!("{base}/console/campaigns/{id}");
    let clock = Instant::now();
    let mut first = Vec::new();
    // Five loads while it runs, a few seconds apart.
    for _ in 0..5 {
        first.push(load(&browser, &page).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (heap_start, nodes_start) = memory(&browser).await;
    let (mut heap_peak, mut nodes_peak) = (heap_start, nodes_start);
    let mut scripted = Vec::new();
    let mut drawn = Vec::new();
    let mut events = 0u64;
    loop {
        let (heap, nodes) = memory(&browser).await;
        heap_peak = heap_peak.max(heap);
        nodes_peak = nodes_peak.max(nodes);
        let taken = browser
            .eval(
                "const c = window.musterConsole; \
                 return c ? [c.timings.splice(0), c.frames.splice(0), c.events, c.ended] : [[], [], 0, false];",
            )
            .await;
        let floats = |v: &Value| -> Vec<f64> {
            v.as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        scripted.extend(floats(&taken[0]));
        drawn.extend(floats(&taken[1]));
        events = taken[2].as_u64().unwrap_or(events);
        if taken[3].as_bool() == Some(true) {
            break;
        }
        assert!(
            clock.elapsed() < Duration::from_secs(1800),
            "the campaign did not end in 30 minutes"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let campaign = get(&mut system.client, &id).await;
    assert_eq!(
        campaign.state(),
        CampaignState::CompletedWithErrors,
        "{}",
        campaign.state_reason
    );
    let shown = browser.text_of("done").await;
    assert_eq!(shown, targets.to_string(), "the page ends showing every target done");
    let (heap_end, nodes_end) = memory(&browser).await;
    let (dom_end, load_end) = load(&browser, &page).await;

    println!(
        "campaign: {} in {:.0}s; the page took {events} live events over the last load",
        campaign.state_reason,
        clock.elapsed().as_secs_f64()
    );
    let doms: Vec<f64> = first.iter().map(|f| f.0).collect();
    let loads: Vec<f64> = first.iter().map(|f| f.1).collect();
    summary("first render while running (DOMContentLoaded)", doms);
    summary("first render while running (load)", loads);
    summary("live update, script", scripted);
    summary("live update, until the next frame was drawn", drawn);
    println!(
        "page memory: JS heap {heap_start:.1} MiB at start, {heap_peak:.1} MiB peak, {heap_end:.1} MiB at the end; \
         elements {nodes_start} / {nodes_peak} / {nodes_end}"
    );
    println!("ended campaign page: DOMContentLoaded {dom_end:.0} ms, load {load_end:.0} ms");
}
