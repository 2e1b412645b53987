//! The Organization: its OUs and member accounts, made through the sim.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::err;
use super::fleet_file::{AccountSpec, FleetFile};

pub(super) async fn ensure_organization(org: &aws_sdk_organizations::Client) -> anyhow::Result<String> {
    match org.describe_organization().send().await {
        Ok(out) => Ok(out.organization.and_then(|o| o.id).unwrap_or_default()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_aws_organizations_not_in_use_exception()) =>
        {
            let out = org
                .create_organization()
                .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
                .send()
                .await
                .map_err(err("CreateOrganization"))?;
            Ok(out.organization.and_then(|o| o.id).unwrap_or_default())
        }
        Err(e) => Err(err("DescribeOrganization")(e)),
    }
}

pub(super) async fn ensure_ous(
    org: &aws_sdk_organizations::Client,
    root_id: &str,
    fleet: &FleetFile,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut ids = BTreeMap::new();
    let mut paths: Vec<&str> = fleet.ous.iter().map(|o| o.path.as_str()).collect();
    paths.sort_by_key(|p| p.matches('/').count());
    for path in paths {
        let mut parent = root_id.to_owned();
        let mut so_far = String::new();
        for name in path.split('/') {
            so_far = if so_far.is_empty() {
                name.to_owned()
            } else {
                format!("{so_far}/{name}")
            };
            if let Some(id) = ids.get(&so_far) {
                parent = String::clone(id);
                continue;
            }
            let pages: Vec<_> = org
                .list_organizational_units_for_parent()
                .parent_id(&parent)
                .into_paginator()
                .send()
                .try_collect()
                .await
                .map_err(err("ListOrganizationalUnitsForParent"))?;
            let existing: Vec<_> = pages.iter().flat_map(|p| p.organizational_units()).collect();
            let id = match existing
                .iter()
                .find(|ou| ou.name() == Some(name))
                .and_then(|ou| ou.id())
            {
                Some(id) => id.to_owned(),
                None => org
                    .create_organizational_unit()
                    .parent_id(&parent)
                    .name(name)
                    .send()
                    .await
                    .map_err(err("CreateOrganizationalUnit"))?
                    .organizational_unit
                    .and_then(|ou| ou.id)
                    .context("CreateOrganizationalUnit returned no id")?,
            };
            ids.insert(so_far.clone(), id.clone());
            parent = id;
        }
    }
    Ok(ids)
}

pub(super) async fn ensure_accounts<'a>(
    org: &aws_sdk_organizations::Client,
    root_id: &str,
    ous: &BTreeMap<String, String>,
    fleet: &'a FleetFile,
) -> anyhow::Result<Vec<(String, String, &'a AccountSpec)>> {
    let pages: Vec<_> = org
        .list_accounts()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("ListAccounts"))?;
    let existing: Vec<_> = pages.iter().flat_map(|p| p.accounts()).collect();
    let mut out = Vec::new();
    for (name, spec) in fleet.expanded_accounts() {
        let id = match existing
            .iter()
            .find(|a| a.name() == Some(name.as_str()))
            .and_then(|a| a.id())
        {
            Some(id) => id.to_owned(),
            None => org
                .create_account()
                .account_name(&name)
                .email(format!("{name}@sandbox.muster.invalid"))
                .send()
                .await
                .map_err(err("CreateAccount"))?
                .create_account_status
                .and_then(|s| s.account_id)
                .context("CreateAccount returned no account id")?,
        };
        let wanted_parent = spec
            .ou
            .as_ref()
            .and_then(|path| ous.get(path))
            .cloned()
            .unwrap_or_else(|| root_id.to_owned());
        let current_parent = org
            .list_parents()
            .child_id(&id)
            .send()
            .await
            .map_err(err("ListParents"))?
            .parents()
            .first()
            .and_then(|p| p.id().map(str::to_owned))
            .unwrap_or_else(|| root_id.to_owned());
        if current_parent != wanted_parent {
            org.move_account()
                .account_id(&id)
                .source_parent_id(&current_parent)
                .destination_parent_id(&wanted_parent)
                .send()
                .await
                .map_err(err("MoveAccount"))?;
        }
        out.push((name, id, spec));
    }
    Ok(out)
}
