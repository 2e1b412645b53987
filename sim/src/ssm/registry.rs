//! Customers' Command documents: CreateDocument, UpdateDocument (a new
//! version), UpdateDocumentDefaultVersion and ModifyDocumentPermission
//! (sharing with other accounts), and how SendCommand and GetDocument find
//! a document by name or ARN and version, as SSM does: by name in the
//! caller's own account (or AWS's), by ARN in the owner's account when the
//! owner shared it with the caller, always in the caller's region.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::api::{error, string, validation};
use super::documents::{self, Document};
use super::{ApiError, Ctx};

/// One customer document in one (account, region): its versions and who
/// it is shared with.
#[derive(Debug, Default)]
pub struct Customer {
    versions: Vec<Arc<Document>>,
    /// Index into `versions`.
    default: usize,
    shared_with: BTreeSet<String>,
}

/// Customer documents by (owner account, region, name).
pub type Registry = HashMap<(String, String, String), Customer>;

fn description(name: &str, owner: &str, customer: &Customer) -> Value {
    serde_json::json!({
        "Name": name,
        "Owner": owner,
        "DocumentType": "Command",
        "DocumentFormat": "JSON",
        "SchemaVersion": "2.2",
        "Status": "Active",
        "DocumentVersion": customer.versions.len().to_string(),
        "LatestVersion": customer.versions.len().to_string(),
        "DefaultVersion": (customer.default + 1).to_string(),
    })
}

fn content_of(request: &Value) -> Result<&str, ApiError> {
    if let Some(format) = string(request, "DocumentFormat")
        && format != "JSON"
    {
        return Err(error(
            "InvalidDocumentContent",
            &format!("muster-sim takes document content as JSON only, not {format}"),
        ));
    }
    if string(request, "DocumentType").is_some_and(|t| t != "Command") {
        return Err(error("InvalidDocumentType", "muster-sim keeps Command documents only"));
    }
    string(request, "Content").ok_or_else(|| {
        validation("1 validation error detected: Value null at 'content' failed to satisfy constraint: Member must not be null")
    })
}

fn name_of(request: &Value) -> Result<&str, ApiError> {
    string(request, "Name").ok_or_else(|| {
        validation(
            "1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null",
        )
    })
}

fn not_found(name: &str) -> ApiError {
    error("InvalidDocument", &format!("Document with name {name} does not exist."))
}

/// CreateDocument: version 1 of a new document of the caller's account.
pub fn create(registry: &mut Registry, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let name = name_of(request)?;
    let content = content_of(request)?;
    if documents::is_reserved(name) || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(validation(&format!(
            "Document name {name} is reserved or not valid: 3 to 128 of letters, digits and _.-, not starting with aws, amazon or amzn"
        )));
    }
    let key = (ctx.account.clone(), ctx.region.clone(), name.to_owned());
    if registry.contains_key(&key) {
        return Err(error("DocumentAlreadyExists", "The specified document already exists."));
    }
    let document = documents::parse(name, &ctx.account, 1, content).map_err(|e| error("InvalidDocumentContent", &e))?;
    let customer = Customer {
        versions: vec![Arc::new(document)],
        ..Default::default()
    };
    let answer = serde_json::json!({"DocumentDescription": description(name, &ctx.account, &customer)});
    registry.insert(key, customer);
    Ok(answer)
}

/// UpdateDocument: a new version (the default stays where it was).
pub fn update(registry: &mut Registry, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let name = name_of(request)?;
    let content = content_of(request)?;
    let customer = registry
        .get_mut(&(ctx.account.clone(), ctx.region.clone(), name.to_owned()))
        .ok_or_else(|| not_found(name))?;
    if customer.versions.last().and_then(|d| d.written.as_deref()) == Some(content) {
        return Err(error(
            "DuplicateDocumentContent",
            "The content of the association document matches another document. Change the content of the document and try again.",
        ));
    }
    let version = customer.versions.len() as u32 + 1;
    let document =
        documents::parse(name, &ctx.account, version, content).map_err(|e| error("InvalidDocumentContent", &e))?;
    customer.versions.push(Arc::new(document));
    Ok(serde_json::json!({"DocumentDescription": description(name, &ctx.account, customer)}))
}

/// UpdateDocumentDefaultVersion.
pub fn set_default(registry: &mut Registry, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let name = name_of(request)?;
    let customer = registry
        .get_mut(&(ctx.account.clone(), ctx.region.clone(), name.to_owned()))
        .ok_or_else(|| not_found(name))?;
    let wanted = string(request, "DocumentVersion").unwrap_or_default();
    let index = wanted
        .parse::<usize>()
        .ok()
        .filter(|v| (1..=customer.versions.len()).contains(v))
        .ok_or_else(|| {
            error(
                "InvalidDocumentVersion",
                &format!("Document version {wanted} does not exist."),
            )
        })?;
    customer.default = index - 1;
    Ok(serde_json::json!({"Description": {"Name": name, "DefaultVersion": wanted}}))
}

/// ModifyDocumentPermission: shares the document with accounts (or stops).
pub fn share(registry: &mut Registry, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let name = name_of(request)?;
    if string(request, "PermissionType") != Some("Share") {
        return Err(validation("PermissionType must be Share"));
    }
    let customer = registry
        .get_mut(&(ctx.account.clone(), ctx.region.clone(), name.to_owned()))
        .ok_or_else(|| not_found(name))?;
    let accounts = |field: &str| -> Vec<String> {
        request[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect()
    };
    customer.shared_with.extend(accounts("AccountIdsToAdd"));
    for account in accounts("AccountIdsToRemove") {
        customer.shared_with.remove(&account);
    }
    Ok(serde_json::json!({}))
}

/// The document `name` (a name or an ARN) at `version` ($DEFAULT, $LATEST
/// or a number) as the caller may run it in its region.
pub fn resolve(registry: &Registry, ctx: &Ctx, name: &str, version: &str) -> Result<Arc<Document>, ApiError> {
    let bad_version = || {
        error(
            "InvalidDocumentVersion",
            &format!("Document version {version} does not exist."),
        )
    };
    let (owner, region, short) = match name.strip_prefix("arn:") {
        Some(rest) => {
            // arn:PARTITION:ssm:REGION:ACCOUNT:document/NAME
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [_, "ssm", region, account, resource] = parts[..] else {
                return Err(not_found(name));
            };
            let short = resource.strip_prefix("document/").ok_or_else(|| not_found(name))?;
            (account, region, short)
        }
        None => (ctx.account.as_str(), ctx.region.as_str(), name),
    };
    if region != ctx.region {
        return Err(not_found(name));
    }
    if owner.is_empty() || (documents::is_reserved(short) && !name.starts_with("arn:")) {
        let document = documents::find(short).ok_or_else(|| not_found(name))?;
        return if ["$DEFAULT", "$LATEST", "1"].contains(&version) {
            Ok(document)
        } else {
            Err(bad_version())
        };
    }
    let customer = registry
        .get(&(owner.to_owned(), region.to_owned(), short.to_owned()))
        .filter(|c| owner == ctx.account || c.shared_with.contains(&ctx.account))
        .ok_or_else(|| not_found(name))?;
    let index = match version {
        "$DEFAULT" => customer.default,
        "$LATEST" => customer.versions.len() - 1,
        number => {
            number
                .parse::<usize>()
                .ok()
                .filter(|v| (1..=customer.versions.len()).contains(v))
                .ok_or_else(bad_version)?
                - 1
        }
    };
    Ok(customer.versions[index].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(account: &str) -> Ctx {
        Ctx {
            account: account.into(),
            region: "us-east-1".into(),
            principal: String::new(),
        }
    }

    fn doc(step: &str) -> String {
        serde_json::json!({"schemaVersion": "2.2", "mainSteps": [
            {"action": "aws:runShellScript", "name": step, "inputs": {"runCommand": ["true"]}}]})
        .to_string()
    }

    #[test]
    fn documents_are_found_by_name_in_their_account_and_by_arn_where_shared() {
        let mut registry = Registry::new();
        let (owner, user, stranger) = (ctx("111111111111"), ctx("222222222222"), ctx("333333333333"));
        create(
            &mut registry,
            &owner,
            &serde_json::json!({"Name": "Acme-Patch", "Content": doc("One")}),
        )
        .unwrap();
        update(
            &mut registry,
            &owner,
            &serde_json::json!({"Name": "Acme-Patch", "Content": doc("Two")}),
        )
        .unwrap();
        let again = update(
            &mut registry,
            &owner,
            &serde_json::json!({"Name": "Acme-Patch", "Content": doc("Two")}),
        );
        assert_eq!(again.unwrap_err().code, "DuplicateDocumentContent");
        let arn = "arn:aws:ssm:us-east-1:111111111111:document/Acme-Patch";

        // The owner: by name, default version 1, $LATEST 2, pinned 2.
        assert_eq!(
            resolve(&registry, &owner, "Acme-Patch", "$DEFAULT").unwrap().steps[0].name,
            "One"
        );
        assert_eq!(
            resolve(&registry, &owner, "Acme-Patch", "$LATEST").unwrap().steps[0].name,
            "Two"
        );
        assert_eq!(resolve(&registry, &owner, arn, "2").unwrap().version, 2);
        assert_eq!(
            resolve(&registry, &owner, arn, "3").unwrap_err().code,
            "InvalidDocumentVersion"
        );

        // Others: not by name, by ARN only once shared.
        assert_eq!(
            resolve(&registry, &user, "Acme-Patch", "$DEFAULT").unwrap_err().code,
            "InvalidDocument"
        );
        assert_eq!(
            resolve(&registry, &user, arn, "$DEFAULT").unwrap_err().code,
            "InvalidDocument"
        );
        share(
            &mut registry,
            &owner,
            &serde_json::json!({"Name": "Acme-Patch", "PermissionType": "Share",
            "AccountIdsToAdd": ["222222222222"]}),
        )
        .unwrap();
        set_default(
            &mut registry,
            &owner,
            &serde_json::json!({"Name": "Acme-Patch", "DocumentVersion": "2"}),
        )
        .unwrap();
        assert_eq!(resolve(&registry, &user, arn, "$DEFAULT").unwrap().steps[0].name, "Two");
        assert_eq!(
            resolve(&registry, &stranger, arn, "$DEFAULT").unwrap_err().code,
            "InvalidDocument"
        );
        // In another region it does not exist.
        let west = "arn:aws:ssm:eu-west-1:111111111111:document/Acme-Patch";
        assert_eq!(
            resolve(&registry, &user, west, "$DEFAULT").unwrap_err().code,
            "InvalidDocument"
        );

        // AWS's documents by name or ARN; their names are reserved.
        assert_eq!(
            resolve(&registry, &user, "AWS-RunShellScript", "$DEFAULT")
                .unwrap()
                .owner,
            ""
        );
        let aws = "arn:aws:ssm:us-east-1::document/AWS-RunPatchBaseline";
        assert_eq!(
            resolve(&registry, &user, aws, "1").unwrap().name,
            "AWS-RunPatchBaseline"
        );
        let reserved = create(
            &mut registry,
            &user,
            &serde_json::json!({"Name": "AWS-Mine", "Content": doc("x")}),
        );
        assert_eq!(reserved.unwrap_err().code, "ValidationException");
    }
}
