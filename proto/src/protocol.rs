//! The worker protocol: what a worker must understand of what a controller
//! sends it, and the check that a change to it was weighed.

/// The worker protocol: what a worker must understand of the tasks and
/// leases a controller hands out (`LeaseTaskRequest.protocol`). A controller
/// leases only to workers of its protocol or newer.
///
/// 0 is muster 0.1. 1 (muster 0.2) added what a 0.1 worker would get wrong:
/// command sequences (`ExecuteSpec.then`), leases of cancelled campaigns
/// that may only cancel (`Lease.campaign_cancelled`), stages by tag
/// (`DiscoverSpec.report_tag_keys`), a document's own timeout
/// (`execution_timeout_seconds` 0) and `Task.source_identity`, which the
/// execution roles' trust policy requires.
///
/// Not raised for what a worker may ignore and still run rightly, such as
/// `Lease.takes_compressed_steps` (a worker that ignores it sends plain
/// output, which every controller takes).
///
/// Raise it with any change to what the controller sends workers that an
/// older worker would run wrongly rather than not at all. The test below
/// keeps the shape of those messages in `worker-protocol-<N>.txt`, so that
/// no such change goes in unweighed.
pub const WORKER_PROTOCOL: u32 = 1;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

    use super::WORKER_PROTOCOL;

    fn kind_name(kind: &Kind) -> String {
        match kind {
            Kind::Message(message) => message.full_name().to_owned(),
            Kind::Enum(e) => e.full_name().to_owned(),
            scalar => format!("{scalar:?}").to_lowercase(),
        }
    }

    /// Every message and enum a worker reads in the controller's answers,
    /// one line per field or value: `muster.v1.Lease 2 ttl google.protobuf.Duration`.
    fn what_workers_read() -> String {
        let pool = DescriptorPool::decode(crate::v1::FILE_DESCRIPTOR_SET).expect("the compiled-in descriptors");
        let service = pool
            .get_service_by_name("muster.v1.WorkerService")
            .expect("the worker service");
        let mut lines = BTreeMap::new();
        let mut todo: Vec<MessageDescriptor> = service.methods().map(|m| m.output()).collect();
        while let Some(message) = todo.pop() {
            if lines.contains_key(message.full_name()) || !message.full_name().starts_with("muster.") {
                continue;
            }
            let mut fields = Vec::new();
            for field in message.fields() {
                let label = if field.is_map() {
                    "map "
                } else if field.is_list() {
                    "repeated "
                } else {
                    ""
                };
                let kind = field.kind();
                fields.push(format!(
                    "{} {} {} {label}{}",
                    message.full_name(),
                    field.number(),
                    field.name(),
                    kind_name(&kind)
                ));
                match kind {
                    Kind::Message(inner) => todo.push(inner),
                    Kind::Enum(e) => {
                        let values = e
                            .values()
                            .map(|v| format!("{} {} {}", e.full_name(), v.number(), v.name()));
                        lines.insert(e.full_name().to_owned(), values.collect::<Vec<_>>());
                    }
                    _ => {}
                }
            }
            lines.insert(message.full_name().to_owned(), fields);
        }
        lines.into_values().flatten().map(|line| line + "\n").collect()
    }

    #[test]
    fn what_workers_read_changes_only_with_a_weighed_protocol() {
        let file = format!("{}/worker-protocol-{WORKER_PROTOCOL}.txt", env!("CARGO_MANIFEST_DIR"));
        let now = what_workers_read();
        if std::env::var_os("MUSTER_BLESS_WORKER_PROTOCOL").is_some() {
            std::fs::write(&file, &now).expect("write the protocol's shape");
        }
        let kept = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            kept == now,
            "what the controller sends workers changed ({file} no longer matches it). Would a worker of \
             protocol {WORKER_PROTOCOL} run a task wrongly with the change (rather than not at all)? Then raise \
             WORKER_PROTOCOL and say why in its comment. Either way, write the new shape with \
             MUSTER_BLESS_WORKER_PROTOCOL=1 cargo test -p muster-proto protocol, and commit it.\n--- kept\n{kept}\n--- now\n{now}"
        );
    }
}
