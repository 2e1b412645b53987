//! Fleets the scenarios use. Behaviour comes from `muster-sim:` tags.

/// Three accounts in two OUs and two regions: Linux and Windows, a failing
/// script per region, an offline agent, an unmanaged instance, and an account
/// without the execution role.
pub const MIXED: &str = r#"
name = "mixed"
external_id = "ext-mixed"
output_bucket = "muster-output"
results_bucket = "muster-results"
log_group = "/muster/test"

[[ous]]
path = "Prod"
[[ous]]
path = "Dev"

[[accounts]]
name = "prod-a"
ou = "Prod"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 4
  tags = { Role = "web", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 2
  platform = "windows"
  tags = { Role = "win", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "fail", "muster-sim:exit-code" = "2", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "offline", "muster-sim:agent" = "offline" }

[[accounts]]
name = "prod-b"
ou = "Prod"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 3
  tags = { Role = "web", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "unmanaged", "muster-sim:agent" = "unmanaged" }

[[accounts]]
name = "dev-a"
ou = "Dev"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 3
  tags = { Role = "web", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 1
  platform = "windows"
  tags = { Role = "win", "muster-sim:duration" = "0.5" }
"#;

/// One account, one region, `count` Linux instances running `duration`
/// simulated seconds, `failing` of which exit 1.
pub fn uniform(count: u32, failing: u32, duration: f64) -> String {
    format!(
        r#"
name = "uniform"
external_id = "ext-uniform"
output_bucket = "muster-output"
results_bucket = "muster-results"

[[accounts]]
name = "only"
regions = ["us-east-1"]
  [[accounts.instances]]
  count = {ok}
  tags = {{ Role = "web", "muster-sim:duration" = "{duration}" }}
{failing_group}
"#,
        ok = count - failing,
        failing_group = if failing > 0 {
            format!(
                "  [[accounts.instances]]\n  count = {failing}\n  tags = {{ Role = \"fail\", \"muster-sim:exit-code\" = \"1\", \"muster-sim:duration\" = \"{duration}\" }}\n"
            )
        } else {
            String::new()
        }
    )
}

/// Accounts `a000`, `a001`, ... each in `regions` with its own number of
/// Linux instances per region, whose commands take `duration` simulated
/// seconds (the benchmarks' fleet shapes).
pub fn shaped(per_region: &[u32], regions: &[&str], duration: f64) -> String {
    let regions = regions
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut fleet = String::from(
        "name = \"grid\"\nexternal_id = \"ext-grid\"\noutput_bucket = \"muster-output\"\nresults_bucket = \"muster-results\"\n",
    );
    for (i, count) in per_region.iter().enumerate() {
        fleet.push_str(&format!(
            "\n[[accounts]]\nname = \"a{i:03}\"\nregions = [{regions}]\n  [[accounts.instances]]\n  count = {count}\n  \
             tags = {{ Role = \"web\", \"muster-sim:duration\" = \"{duration}\" }}\n"
        ));
    }
    fleet
}

/// `accounts` accounts, each in `regions` with `per_region` Linux instances
/// whose commands take `duration` simulated seconds (for benchmarks).
pub fn grid(accounts: u32, regions: &[&str], per_region: u32, duration: f64) -> String {
    shaped(&vec![per_region; accounts as usize], regions, duration)
}
