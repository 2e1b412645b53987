//! Reading a process's Prometheus metrics in tests.

/// Parses `/metrics` text, panicking with the text when it is not
/// Prometheus's format.
pub fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"))
}

/// Sum of a metric's samples whose labels include every pair in `labels`.
pub fn sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Scrapes `/metrics` on loopback `port`.
pub async fn scrape(port: u16) -> prometheus_parse::Scrape {
    let (status, text) = crate::otlp::http_get(port, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    parse(&text)
}
