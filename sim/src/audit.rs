//! The log of every SendCommand the sim accepted: what proves invariant 1
//! (no instance gets a command twice) in tests and benchmarks.

use std::sync::Mutex;

use serde::Serialize;

/// One accepted SendCommand, for proving invariant 1 (no instance gets a
/// command twice).
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// When it was accepted (RFC 3339).
    pub at: String,
    /// Account it ran in.
    pub account: String,
    /// Region it ran in.
    pub region: String,
    /// The command id SSM returned.
    pub command_id: String,
    /// The document.
    pub document_name: String,
    /// Every instance the command went to.
    pub instance_ids: Vec<String>,
    /// The Comment sent.
    pub comment: String,
    /// The access key's principal.
    pub principal: String,
}

/// The log itself.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: Mutex<Vec<AuditEntry>>,
}

impl AuditLog {
    /// Records an accepted SendCommand.
    pub fn record(&self, entry: AuditEntry) {
        self.entries.lock().expect("audit lock").push(entry);
    }

    /// Every entry so far, oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries.lock().expect("audit lock").clone()
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.entries.lock().expect("audit lock").clear();
    }
}
