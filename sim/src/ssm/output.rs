//! Command output as SSM shapes it: the agent's 2,500-character plugin output
//! (what ListCommandInvocations shows), the 24,000 / 8,000-character limits of
//! GetCommandInvocation, and where full output lands in S3 and CloudWatch Logs.

/// What ListCommandInvocations' plugin Output holds at most.
pub const PLUGIN_OUTPUT_CHARS: usize = 2_500;
/// What GetCommandInvocation's StandardOutputContent holds at most.
pub const STDOUT_CHARS: usize = 24_000;
/// What GetCommandInvocation's StandardErrorContent holds at most.
pub const STDERR_CHARS: usize = 8_000;

const ERROR_TITLE: &str = "\n----------ERROR-------\n";
const OUT_MARK: &str = "\n---Output truncated---";
const ERR_MARK: &str = "\n---Error truncated----";

/// The first `n` characters of `text`.
pub fn first_chars(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

/// The plugin output the SSM agent reports: stdout, then an error title and
/// stderr, cut to fit `capacity` with truncation marks, as the agent does.
pub fn plugin_output(stdout: &str, stderr: &str, capacity: usize) -> String {
    let out_len = stdout.chars().count();
    let err_len = stderr.chars().count();
    let title = if err_len > 0 { ERROR_TITLE } else { "" };
    let available = capacity.saturating_sub(title.len());
    if out_len + err_len < available {
        return format!("{stdout}{title}{stderr}");
    }
    if out_len > available / 2 && err_len > available / 2 {
        let each = available.saturating_sub(OUT_MARK.len() + ERR_MARK.len()) / 2;
        return format!(
            "{}{OUT_MARK}{title}{}{ERR_MARK}",
            first_chars(stdout, each),
            first_chars(stderr, each)
        );
    }
    if out_len < available / 2 {
        let room = available.saturating_sub(ERR_MARK.len()).saturating_sub(out_len);
        return format!("{stdout}{title}{}{ERR_MARK}", first_chars(stderr, room));
    }
    let room = available.saturating_sub(OUT_MARK.len()).saturating_sub(err_len);
    format!("{}{OUT_MARK}{title}{stderr}", first_chars(stdout, room))
}

/// The S3 key of one stream of one step: `<prefix>/<command>/<instance>/<step dir>/stdout`.
pub fn s3_key(prefix: &str, command_id: &str, instance_id: &str, step_dir: &str, stream: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{command_id}/{instance_id}/{step_dir}/{stream}")
    } else {
        format!("{prefix}/{command_id}/{instance_id}/{step_dir}/{stream}")
    }
}

/// The URL SSM reports for an S3 output object.
pub fn s3_url(region: &str, bucket: &str, key: &str) -> String {
    format!("https://s3.{region}.amazonaws.com/{bucket}/{key}")
}

/// The CloudWatch Logs stream of one stream of one step.
pub fn log_stream(command_id: &str, instance_id: &str, step_segment: &str, stream: &str) -> String {
    format!("{command_id}/{instance_id}/{step_segment}/{stream}")
}

/// Deterministic filler of exactly `bytes` bytes, in numbered lines, so a test
/// can check that the text came back whole and in order.
pub fn filler(instance_id: &str, stream: &str, bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 64);
    let mut line = 1;
    while text.len() < bytes {
        text.push_str(&format!(
            "{instance_id} {stream} line {line:06} ........................................\n"
        ));
        line += 1;
    }
    text.truncate(bytes);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_whole() {
        assert_eq!(plugin_output("", "", 100), "");
        assert_eq!(plugin_output("out", "", 100), "out");
        assert_eq!(plugin_output("", "err", 100), "\n----------ERROR-------\nerr");
        assert_eq!(plugin_output("out", "err", 100), "out\n----------ERROR-------\nerr");
    }

    #[test]
    fn long_output_is_cut_to_capacity_with_marks() {
        let long = "x".repeat(5_000);
        let only_out = plugin_output(&long, "", PLUGIN_OUTPUT_CHARS);
        assert_eq!(only_out.len(), PLUGIN_OUTPUT_CHARS);
        assert!(only_out.ends_with("---Output truncated---"));
        let both = plugin_output(&long, &long, PLUGIN_OUTPUT_CHARS);
        assert!(both.len() <= PLUGIN_OUTPUT_CHARS);
        assert!(both.contains("---Output truncated---\n----------ERROR-------\n"));
        assert!(both.ends_with("---Error truncated----"));
        let long_err = plugin_output("short", &long, PLUGIN_OUTPUT_CHARS);
        assert!(long_err.starts_with("short\n----------ERROR-------\n"));
        assert!(long_err.len() <= PLUGIN_OUTPUT_CHARS);
    }

    #[test]
    fn filler_is_exact_and_keys_follow_ssm() {
        assert_eq!(filler("i-1", "stdout", 100_000).len(), 100_000);
        assert_eq!(
            s3_key(
                "runs/c1/",
                "cmd",
                "i-1",
                "awsrunShellScript/0.awsrunShellScript",
                "stdout"
            ),
            "runs/c1/cmd/i-1/awsrunShellScript/0.awsrunShellScript/stdout"
        );
        assert_eq!(s3_key("", "cmd", "i-1", "d", "stderr"), "cmd/i-1/d/stderr");
        assert_eq!(
            log_stream("cmd", "i-1", "aws-runShellScript", "stdout"),
            "cmd/i-1/aws-runShellScript/stdout"
        );
        assert_eq!(first_chars("héllo", 2), "hé");
    }
}
