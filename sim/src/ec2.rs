//! What the sim knows of an EC2 instance, and how it reads them out of
//! moto's DescribeInstances answers. Both moto's client and the fleet's
//! cache (and the server, which learns from answers it relays) use it.

use std::collections::BTreeMap;

/// What the sim needs to know about an EC2 instance.
#[derive(Debug, Clone)]
pub struct InstanceFact {
    /// Instance id.
    pub id: String,
    /// EC2 state name: "running", "stopped", "terminated", ...
    pub state: String,
    /// True for Windows instances (EC2 `Platform: windows`).
    pub windows: bool,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Private IP, for DescribeInstanceInformation.
    pub private_ip: Option<String>,
    /// Private DNS name, used as ComputerName.
    pub private_dns: Option<String>,
}

/// One page of a DescribeInstances answer.
#[derive(Debug, Default)]
pub struct InstancesPage {
    /// The instances on the page.
    pub instances: Vec<InstanceFact>,
    /// The token of the next page.
    pub next_token: Option<String>,
}

/// Reads the instances out of an EC2 DescribeInstances XML answer.
pub fn parse_describe_instances(xml: &[u8]) -> InstancesPage {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().trim_text(false);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut page = InstancesPage::default();
    let mut current: Option<InstanceFact> = None;
    let mut tag_key = String::new();
    let mut buf = Vec::new();
    // DescribeInstancesResponse/reservationSet/item/instancesSet/item
    const INSTANCE_DEPTH: usize = 5;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                text.clear();
                if path.len() == INSTANCE_DEPTH && path[1] == "reservationSet" && path[3] == "instancesSet" {
                    current = Some(InstanceFact {
                        id: String::new(),
                        state: String::new(),
                        windows: false,
                        tags: Default::default(),
                        private_ip: None,
                        private_dns: None,
                    });
                }
            }
            Ok(Event::Text(t)) => text.push_str(&t.decode().unwrap_or_default()),
            Ok(Event::GeneralRef(r)) => {
                let name = r.decode().unwrap_or_default();
                text.push_str(match name.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                });
            }
            Ok(Event::End(_)) => {
                let rel: Vec<&str> = path.iter().skip(INSTANCE_DEPTH).map(String::as_str).collect();
                if path.len() == 2 && path[1] == "nextToken" {
                    page.next_token = Some(text.trim().to_owned());
                }
                if let Some(instance) = current.as_mut() {
                    match rel.as_slice() {
                        ["instanceId"] => instance.id = text.trim().to_owned(),
                        ["platform"] => instance.windows = text.trim().eq_ignore_ascii_case("windows"),
                        ["privateIpAddress"] => instance.private_ip = Some(text.trim().to_owned()),
                        ["privateDnsName"] => instance.private_dns = Some(text.trim().to_owned()),
                        ["instanceState", "name"] => instance.state = text.trim().to_owned(),
                        ["tagSet", "item", "key"] => tag_key = text.clone(),
                        ["tagSet", "item", "value"] => {
                            instance.tags.insert(std::mem::take(&mut tag_key), text.clone());
                        }
                        _ => {}
                    }
                }
                if path.len() == INSTANCE_DEPTH
                    && let Some(instance) = current.take()
                    && !instance.id.is_empty()
                {
                    page.instances.push(instance);
                }
                path.pop();
                text.clear();
            }
            Ok(Event::Eof) => break,
            Err(error) => {
                tracing::warn!(%error, "unreadable DescribeInstances answer");
                break;
            }
            Ok(_) => {}
        }
        buf.clear();
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_describe_instances_answers() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><nextToken>r-abc</nextToken><reservationSet><item><reservationId>r-1</reservationId><instancesSet><item><instanceId>i-0123456789abcdef0</instanceId><networkInterfaceSet><item><privateIpAddress>10.9.9.9</privateIpAddress></item></networkInterfaceSet><privateDnsName>ip-10-0-0-1.ec2.internal</privateDnsName><privateIpAddress>10.0.0.1</privateIpAddress><instanceState><code>16</code><name>running</name></instanceState><platform>windows</platform><tagSet><item><key>Name</key><value>a &amp; b</value></item><item><key>Empty</key><value></value></item></tagSet></item><item><instanceId>i-0123456789abcdef1</instanceId><instanceState><code>80</code><name>stopped</name></instanceState><tagSet/></item></instancesSet></item></reservationSet></DescribeInstancesResponse>"#;
        let page = parse_describe_instances(xml);
        assert_eq!(page.next_token.as_deref(), Some("r-abc"));
        assert_eq!(page.instances.len(), 2);
        let first = &page.instances[0];
        assert_eq!(first.id, "i-0123456789abcdef0");
        assert_eq!(first.state, "running");
        assert!(first.windows);
        assert_eq!(first.private_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(first.tags["Name"], "a & b");
        assert_eq!(first.tags["Empty"], "");
        assert_eq!(page.instances[1].state, "stopped");
        assert!(!page.instances[1].windows);
    }
}
