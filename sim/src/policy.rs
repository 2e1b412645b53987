//! Trust policy evaluation for AssumeRole, as IAM does it for the cases muster
//! meets: AWS principals (account, root, role, user, session ARNs, "*"),
//! `sts:AssumeRole`, `sts:SetSourceIdentity` and `sts:TagSession` actions
//! with wildcards, explicit Deny over Allow, and conditions on
//! `sts:ExternalId`, `sts:SourceIdentity`, `aws:PrincipalArn`,
//! `aws:PrincipalAccount` and `sts:RoleSessionName`.
//!
//! Anything it does not understand (an unknown condition operator, a
//! condition key it has no value for) does not match, so the sandbox fails
//! closed, as IAM would for a missing key.

use serde_json::Value;

use crate::identity::Caller;

/// The request being authorized.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Who is calling.
    pub caller: &'a Caller,
    /// The action, e.g. "sts:AssumeRole".
    pub action: &'a str,
    /// The ExternalId sent, if any.
    pub external_id: Option<&'a str>,
    /// The RoleSessionName sent.
    pub session_name: &'a str,
    /// The SourceIdentity sent, if any.
    pub source_identity: Option<&'a str>,
}

/// The outcome of evaluating a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An Allow statement matched and no Deny did.
    Allow,
    /// A Deny statement matched.
    ExplicitDeny,
    /// Nothing matched.
    ImplicitDeny,
}

/// Evaluates a trust (resource) policy document.
pub fn evaluate_trust(document: &Value, request: &Request<'_>) -> Decision {
    let mut allowed = false;
    for statement in as_list(document.get("Statement")) {
        if !statement_matches(statement, request) {
            continue;
        }
        match statement.get("Effect").and_then(Value::as_str) {
            Some("Deny") => return Decision::ExplicitDeny,
            Some("Allow") => allowed = true,
            _ => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

fn statement_matches(statement: &Value, request: &Request<'_>) -> bool {
    let action_ok = match (statement.get("Action"), statement.get("NotAction")) {
        (Some(actions), _) => as_list(Some(actions))
            .iter()
            .filter_map(|a| a.as_str())
            .any(|pattern| wildcard_match(&pattern.to_ascii_lowercase(), &request.action.to_ascii_lowercase())),
        (None, Some(not_actions)) => !as_list(Some(not_actions))
            .iter()
            .filter_map(|a| a.as_str())
            .any(|pattern| wildcard_match(&pattern.to_ascii_lowercase(), &request.action.to_ascii_lowercase())),
        (None, None) => false,
    };
    action_ok
        && principal_matches(statement.get("Principal"), request.caller)
        && conditions_match(statement.get("Condition"), request)
}

fn principal_matches(principal: Option<&Value>, caller: &Caller) -> bool {
    match principal {
        Some(Value::String(s)) if s == "*" => true,
        Some(Value::Object(map)) => map.get("AWS").is_some_and(|aws| {
            as_list(Some(aws))
                .into_iter()
                .filter_map(Value::as_str)
                .any(|p| aws_principal_matches(p, caller))
        }),
        _ => false,
    }
}

fn aws_principal_matches(principal: &str, caller: &Caller) -> bool {
    if principal == "*" {
        return true;
    }
    if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        return caller.account == principal;
    }
    let Some((account, resource)) = split_arn(principal) else {
        return false;
    };
    if account != caller.account {
        return false;
    }
    if resource == "root" {
        return true;
    }
    if resource.starts_with("role/") {
        return caller
            .role_arn
            .as_deref()
            .is_some_and(|role| same_arn_ignoring_partition(role, principal));
    }
    same_arn_ignoring_partition(&caller.principal_arn, principal)
}

/// Returns (account, resource) of an ARN such as
/// "arn:aws:iam::123456789012:role/x".
fn split_arn(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some(_service), Some(_region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some((account, resource))
}

fn same_arn_ignoring_partition(a: &str, b: &str) -> bool {
    let strip = |arn: &str| arn.splitn(3, ':').nth(2).map(str::to_owned);
    strip(a).is_some() && strip(a) == strip(b)
}

fn conditions_match(condition: Option<&Value>, request: &Request<'_>) -> bool {
    let Some(Value::Object(operators)) = condition else {
        return condition.is_none();
    };
    operators.iter().all(|(operator, keys)| {
        let Value::Object(keys) = keys else { return false };
        keys.iter().all(|(key, expected)| {
            let actual = context_value(key, request);
            operator_matches(operator, actual.as_deref(), &as_list(Some(expected)))
        })
    })
}

fn context_value(key: &str, request: &Request<'_>) -> Option<String> {
    match key.to_ascii_lowercase().as_str() {
        "sts:externalid" => request.external_id.map(str::to_owned),
        "sts:rolesessionname" => Some(request.session_name.to_owned()),
        "sts:sourceidentity" => request.source_identity.map(str::to_owned),
        "aws:principalaccount" => Some(request.caller.account.clone()),
        "aws:principalarn" => Some(
            request
                .caller
                .role_arn
                .clone()
                .unwrap_or_else(|| request.caller.principal_arn.clone()),
        ),
        _ => None,
    }
}

fn operator_matches(operator: &str, actual: Option<&str>, expected: &[&Value]) -> bool {
    let (operator, if_exists) = match operator.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (operator, false),
    };
    let expected: Vec<String> = expected
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect();
    if operator == "Null" {
        let want_null = expected.iter().any(|v| v == "true");
        return actual.is_none() == want_null;
    }
    let Some(actual) = actual else {
        return if_exists;
    };
    let any = |f: &dyn Fn(&str) -> bool| expected.iter().any(|e| f(e));
    match operator {
        "StringEquals" | "ArnEquals" => any(&|e| e == actual),
        "StringNotEquals" | "ArnNotEquals" => !any(&|e| e == actual),
        "StringEqualsIgnoreCase" => any(&|e| e.eq_ignore_ascii_case(actual)),
        "StringNotEqualsIgnoreCase" => !any(&|e| e.eq_ignore_ascii_case(actual)),
        "StringLike" | "ArnLike" => any(&|e| wildcard_match(e, actual)),
        "StringNotLike" | "ArnNotLike" => !any(&|e| wildcard_match(e, actual)),
        "Bool" => any(&|e| e.eq_ignore_ascii_case(actual)),
        _ => {
            tracing::warn!(
                operator,
                "trust policy condition operator not supported by muster-sim; not matching"
            );
            false
        }
    }
}

/// IAM wildcard matching: `*` is any run of characters, `?` any one.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn as_list(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => vec![other],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn worker_session() -> Caller {
        Caller {
            account: "123456789012".into(),
            principal_arn: "arn:aws:sts::123456789012:assumed-role/muster-worker/w1".into(),
            role_arn: Some("arn:aws:iam::123456789012:role/muster-worker".into()),
        }
    }

    fn request<'a>(caller: &'a Caller, external_id: Option<&'a str>) -> Request<'a> {
        Request {
            caller,
            action: "sts:AssumeRole",
            external_id,
            session_name: "muster-c1",
            source_identity: None,
        }
    }

    #[test]
    fn a_source_identity_can_be_required_and_setting_it_is_an_action_of_its_own() {
        let caller = worker_session();
        let policy = json!({
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::123456789012:role/muster-worker"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringLike": {"sts:SourceIdentity": "*"}}
                },
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::123456789012:role/muster-worker"},
                    "Action": ["sts:SetSourceIdentity", "sts:TagSession"]
                }
            ]
        });
        let without = request(&caller, None);
        assert_eq!(evaluate_trust(&policy, &without), Decision::ImplicitDeny);
        let with = Request {
            source_identity: Some("alice"),
            ..request(&caller, None)
        };
        assert_eq!(evaluate_trust(&policy, &with), Decision::Allow);
        let set = Request {
            action: "sts:SetSourceIdentity",
            ..with.clone()
        };
        assert_eq!(evaluate_trust(&policy, &set), Decision::Allow);
        let only_assume = json!({"Statement": [policy["Statement"][0].clone()]});
        assert_eq!(evaluate_trust(&only_assume, &set), Decision::ImplicitDeny);
    }

    fn trust_with_external_id() -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:role/muster-worker"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": "s3cret"}}
            }]
        })
    }

    #[test]
    fn role_principal_with_external_id() {
        let caller = worker_session();
        let policy = trust_with_external_id();
        assert_eq!(
            evaluate_trust(&policy, &request(&caller, Some("s3cret"))),
            Decision::Allow
        );
        assert_eq!(
            evaluate_trust(&policy, &request(&caller, Some("wrong"))),
            Decision::ImplicitDeny
        );
        assert_eq!(evaluate_trust(&policy, &request(&caller, None)), Decision::ImplicitDeny);
    }

    #[test]
    fn other_roles_and_accounts_are_not_trusted() {
        let policy = trust_with_external_id();
        let mut other_role = worker_session();
        other_role.role_arn = Some("arn:aws:iam::123456789012:role/someone-else".into());
        assert_eq!(
            evaluate_trust(&policy, &request(&other_role, Some("s3cret"))),
            Decision::ImplicitDeny
        );
        let mut other_account = worker_session();
        other_account.account = "999999999999".into();
        other_account.role_arn = Some("arn:aws:iam::999999999999:role/muster-worker".into());
        assert_eq!(
            evaluate_trust(&policy, &request(&other_account, Some("s3cret"))),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn root_principal_trusts_the_whole_account_and_deny_wins() {
        let caller = worker_session();
        let policy = json!({
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:*"},
                {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole",
                 "Condition": {"StringLike": {"sts:RoleSessionName": "evil-*"}}}
            ]
        });
        assert_eq!(evaluate_trust(&policy, &request(&caller, None)), Decision::Allow);
        let evil = Request {
            session_name: "evil-1",
            ..request(&caller, None)
        };
        assert_eq!(evaluate_trust(&policy, &evil), Decision::ExplicitDeny);
    }

    #[test]
    fn principal_arn_condition_and_wildcards() {
        let caller = worker_session();
        let policy = json!({
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": "123456789012"}, "Action": ["sts:Assume*"],
                "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::123456789012:role/muster-*"}}}]
        });
        assert_eq!(evaluate_trust(&policy, &request(&caller, None)), Decision::Allow);
        assert!(wildcard_match("a*c?e", "abbbcde"));
        assert!(!wildcard_match("a*c?e", "abbbce"));
    }

    #[test]
    fn unknown_operators_fail_closed() {
        let caller = worker_session();
        let policy = json!({
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole",
                "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]
        });
        assert_eq!(evaluate_trust(&policy, &request(&caller, None)), Decision::ImplicitDeny);
    }
}
