//! Reads IAM documents out of muster's CloudFormation templates, resolving the
//! intrinsic functions they use (Ref, Fn::Sub, Fn::Join, Fn::Split, Fn::If with
//! Fn::Equals / Fn::Not / Fn::And / Fn::Or, AWS::NoValue). The sandbox seeds its
//! execution roles from these documents, so what the tests exercise is what a
//! platform team deploys.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

/// A template could not be read or resolved.
#[derive(Debug, thiserror::Error)]
pub enum CfnError {
    /// The file could not be read or parsed.
    #[error("template {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// An intrinsic function could not be resolved.
    #[error("template: {0}")]
    Resolve(String),
}

/// A parameter value: CloudFormation parameters are strings or lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// A String parameter.
    Str(String),
    /// A CommaDelimitedList parameter.
    List(Vec<String>),
}

/// A parsed template with the values to resolve it against.
#[derive(Debug, Clone)]
pub struct Template {
    doc: Value,
    params: BTreeMap<String, Param>,
}

/// The IAM documents of one `AWS::IAM::Role` resource.
#[derive(Debug, Clone)]
pub struct RoleDocuments {
    /// The resolved trust policy.
    pub trust_policy: Value,
    /// Inline policies: (name, resolved document).
    pub policies: Vec<(String, Value)>,
    /// MaxSessionDuration, if set.
    pub max_session_seconds: Option<i64>,
}

impl Template {
    /// Loads a YAML or JSON template.
    pub fn load(path: &Path) -> Result<Self, CfnError> {
        let read_err = |message: String| CfnError::Read {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| read_err(e.to_string()))?;
        Ok(Self {
            doc,
            params: BTreeMap::new(),
        })
    }

    /// Sets parameter values; unset parameters take the template's defaults.
    /// Pseudo parameters (`AWS::AccountId`, `AWS::Partition`, `AWS::Region`)
    /// are set the same way.
    pub fn with_params(mut self, params: impl IntoIterator<Item = (String, Param)>) -> Self {
        self.params.extend(params);
        self
    }

    fn is_resource(&self, name: &str) -> bool {
        let base = name.split('.').next().unwrap_or(name);
        self.doc.get("Resources").and_then(|r| r.get(base)).is_some()
    }

    fn param(&self, name: &str) -> Result<Param, CfnError> {
        if let Some(value) = self.params.get(name) {
            return Ok(value.clone());
        }
        // A resource's id or attribute is only known once deployed: keep a
        // placeholder, which is all that reading policies needs.
        if self.is_resource(name) {
            return Ok(Param::Str(format!("${{{name}}}")));
        }
        let declared = self
            .doc
            .get("Parameters")
            .and_then(|p| p.get(name))
            .ok_or_else(|| CfnError::Resolve(format!("no parameter or pseudo parameter named {name}")))?;
        // YAML reads `Default: 200` as a number; CloudFormation passes it on
        // as text.
        let default = declared
            .get("Default")
            .and_then(|d| match d {
                Value::String(text) => Some(text.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| CfnError::Resolve(format!("parameter {name} has no value and no default")))?;
        let default = default.as_str();
        Ok(match declared.get("Type").and_then(Value::as_str) {
            Some("CommaDelimitedList") => Param::List(default.split(',').map(|s| s.trim().to_owned()).collect()),
            _ => Param::Str(default.to_owned()),
        })
    }

    /// The resolved IAM documents of the role resource `logical_id`.
    pub fn role(&self, logical_id: &str) -> Result<RoleDocuments, CfnError> {
        let properties = self.resource_properties(logical_id, "AWS::IAM::Role")?;
        let trust_policy = self.resolve(
            properties
                .get("AssumeRolePolicyDocument")
                .ok_or_else(|| CfnError::Resolve(format!("{logical_id} has no AssumeRolePolicyDocument")))?,
        )?;
        let mut policies = Vec::new();
        for policy in properties
            .get("Policies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = self.resolve(policy.get("PolicyName").unwrap_or(&Value::Null))?;
            let document = self.resolve(policy.get("PolicyDocument").unwrap_or(&Value::Null))?;
            policies.push((name.as_str().unwrap_or("inline").to_owned(), document));
        }
        Ok(RoleDocuments {
            trust_policy,
            policies,
            max_session_seconds: properties.get("MaxSessionDuration").and_then(Value::as_i64),
        })
    }

    /// The resolved document of the managed policy resource `logical_id`.
    pub fn managed_policy(&self, logical_id: &str) -> Result<Value, CfnError> {
        let properties = self.resource_properties(logical_id, "AWS::IAM::ManagedPolicy")?;
        self.resolve(
            properties
                .get("PolicyDocument")
                .ok_or_else(|| CfnError::Resolve(format!("{logical_id} has no PolicyDocument")))?,
        )
    }

    /// The resolved properties of the resource `logical_id`, which must be of
    /// type `kind` (e.g. `AWS::Glue::Table`).
    pub fn properties(&self, logical_id: &str, kind: &str) -> Result<Value, CfnError> {
        self.resolve(self.resource_properties(logical_id, kind)?)
    }

    fn resource_properties(&self, logical_id: &str, kind: &str) -> Result<&Value, CfnError> {
        let resource = self
            .doc
            .get("Resources")
            .and_then(|r| r.get(logical_id))
            .ok_or_else(|| CfnError::Resolve(format!("no resource {logical_id}")))?;
        if resource.get("Type").and_then(Value::as_str) != Some(kind) {
            return Err(CfnError::Resolve(format!("resource {logical_id} is not an {kind}")));
        }
        resource
            .get("Properties")
            .ok_or_else(|| CfnError::Resolve(format!("resource {logical_id} has no Properties")))
    }

    /// Resolves every intrinsic function in `value`.
    pub fn resolve(&self, value: &Value) -> Result<Value, CfnError> {
        Ok(self.resolve_inner(value)?.unwrap_or(Value::Null))
    }

    /// `None` stands for AWS::NoValue, which removes the item around it.
    fn resolve_inner(&self, value: &Value) -> Result<Option<Value>, CfnError> {
        match value {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    if let Some(resolved) = self.resolve_inner(item)? {
                        out.push(resolved);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            Value::Object(map) if map.len() == 1 => {
                let (key, arg) = map.iter().next().expect("one entry");
                match key.as_str() {
                    "Ref" => self.ref_value(arg),
                    "Fn::Sub" => self.sub(arg).map(Some),
                    "Fn::Join" => self.join(arg).map(Some),
                    "Fn::Split" => self.split(arg).map(Some),
                    "Fn::If" => self.if_(arg),
                    _ => self.resolve_object(map),
                }
            }
            Value::Object(map) => self.resolve_object(map),
            other => Ok(Some(other.clone())),
        }
    }

    fn resolve_object(&self, map: &Map<String, Value>) -> Result<Option<Value>, CfnError> {
        let mut out = Map::new();
        for (key, value) in map {
            if let Some(resolved) = self.resolve_inner(value)? {
                out.insert(key.clone(), resolved);
            }
        }
        Ok(Some(Value::Object(out)))
    }

    fn ref_value(&self, arg: &Value) -> Result<Option<Value>, CfnError> {
        let name = arg
            .as_str()
            .ok_or_else(|| CfnError::Resolve("Ref takes a name".into()))?;
        if name == "AWS::NoValue" {
            return Ok(None);
        }
        Ok(Some(match self.param(name)? {
            Param::Str(s) => Value::String(s),
            Param::List(items) => Value::Array(items.into_iter().map(Value::String).collect()),
        }))
    }

    fn sub(&self, arg: &Value) -> Result<Value, CfnError> {
        let (template, vars) = match arg {
            Value::String(s) => (s.clone(), Map::new()),
            Value::Array(items) if items.len() == 2 => {
                let template = items[0]
                    .as_str()
                    .ok_or_else(|| CfnError::Resolve("Fn::Sub template must be a string".into()))?
                    .to_owned();
                let vars = match self.resolve(&items[1])? {
                    Value::Object(vars) => vars,
                    _ => return Err(CfnError::Resolve("Fn::Sub variables must be a map".into())),
                };
                (template, vars)
            }
            _ => return Err(CfnError::Resolve("Fn::Sub takes a string or [string, map]".into())),
        };
        let mut out = String::new();
        let mut rest = template.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| CfnError::Resolve(format!("unclosed ${{ in {template}")))?
                + start;
            let name = &rest[start + 2..end];
            // `${!Literal}` is the escape for a literal `${Literal}`.
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
                rest = &rest[end + 1..];
                continue;
            }
            let value = match vars.get(name) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => match self.param(name)? {
                    Param::Str(s) => s,
                    Param::List(_) => return Err(CfnError::Resolve(format!("Fn::Sub cannot insert list {name}"))),
                },
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }

    fn join(&self, arg: &Value) -> Result<Value, CfnError> {
        let items = arg
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| CfnError::Resolve("Fn::Join takes [delimiter, list]".into()))?;
        let delimiter = self.resolve(&items[0])?;
        let delimiter = delimiter.as_str().unwrap_or_default().to_owned();
        let list = self.resolve(&items[1])?;
        let parts: Vec<String> = list
            .as_array()
            .ok_or_else(|| CfnError::Resolve("Fn::Join needs a list".into()))?
            .iter()
            .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
            .collect();
        Ok(Value::String(parts.join(&delimiter)))
    }

    fn split(&self, arg: &Value) -> Result<Value, CfnError> {
        let items = arg
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| CfnError::Resolve("Fn::Split takes [delimiter, string]".into()))?;
        let delimiter = self.resolve(&items[0])?;
        let text = self.resolve(&items[1])?;
        let (Some(delimiter), Some(text)) = (delimiter.as_str(), text.as_str()) else {
            return Err(CfnError::Resolve("Fn::Split takes strings".into()));
        };
        Ok(Value::Array(
            text.split(delimiter).map(|s| Value::String(s.to_owned())).collect(),
        ))
    }

    fn if_(&self, arg: &Value) -> Result<Option<Value>, CfnError> {
        let items = arg
            .as_array()
            .filter(|a| a.len() == 3)
            .ok_or_else(|| CfnError::Resolve("Fn::If takes [condition, then, else]".into()))?;
        let name = items[0]
            .as_str()
            .ok_or_else(|| CfnError::Resolve("Fn::If condition must be a name".into()))?;
        if self.condition(name)? {
            self.resolve_inner(&items[1])
        } else {
            self.resolve_inner(&items[2])
        }
    }

    fn condition(&self, name: &str) -> Result<bool, CfnError> {
        let expr = self
            .doc
            .get("Conditions")
            .and_then(|c| c.get(name))
            .ok_or_else(|| CfnError::Resolve(format!("no condition {name}")))?
            .clone();
        self.eval(&expr)
    }

    fn eval(&self, expr: &Value) -> Result<bool, CfnError> {
        let Value::Object(map) = expr else {
            return Err(CfnError::Resolve("a condition must be a function".into()));
        };
        let (key, arg) = map
            .iter()
            .next()
            .ok_or_else(|| CfnError::Resolve("empty condition".into()))?;
        let args = || arg.as_array().cloned().unwrap_or_default();
        match key.as_str() {
            "Fn::Equals" => {
                let args = args();
                if args.len() != 2 {
                    return Err(CfnError::Resolve("Fn::Equals takes two values".into()));
                }
                Ok(self.resolve(&args[0])? == self.resolve(&args[1])?)
            }
            "Fn::Not" => Ok(!self.eval(args().first().unwrap_or(&Value::Null))?),
            "Fn::And" => args().iter().try_fold(true, |acc, c| Ok(acc && self.eval(c)?)),
            "Fn::Or" => args().iter().try_fold(false, |acc, c| Ok(acc || self.eval(c)?)),
            "Condition" => self.condition(arg.as_str().unwrap_or_default()),
            other => Err(CfnError::Resolve(format!(
                "condition function {other} is not supported"
            ))),
        }
    }
}

/// Every action an IAM policy document allows, lowercased, across its Allow
/// statements.
pub fn allowed_actions(document: &Value) -> Vec<String> {
    let statements = match document.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(other) => vec![other.clone()],
        None => Vec::new(),
    };
    let mut actions: Vec<String> = statements
        .iter()
        .filter(|s| s.get("Effect").and_then(Value::as_str) == Some("Allow"))
        .flat_map(|s| match s.get("Action") {
            Some(Value::String(a)) => vec![a.to_ascii_lowercase()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    actions.sort();
    actions.dedup();
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_template() -> Template {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cloudformation/target-account.yaml");
        Template::load(&path).unwrap().with_params([
            ("HubAccountId".to_owned(), Param::Str("123456789012".into())),
            ("ExternalId".to_owned(), Param::Str("s3cret".into())),
            ("AWS::AccountId".to_owned(), Param::Str("222222222222".into())),
            ("AWS::Partition".to_owned(), Param::Str("aws".into())),
        ])
    }

    #[test]
    fn resolves_the_execution_role_of_the_target_template() {
        let role = target_template().role("ExecutionRole").unwrap();
        let statement = &role.trust_policy["Statement"][0];
        assert_eq!(
            statement["Principal"]["AWS"],
            "arn:aws:iam::123456789012:role/muster-worker"
        );
        assert_eq!(statement["Condition"]["StringEquals"]["sts:ExternalId"], "s3cret");
        let (_, document) = &role.policies[0];
        assert_eq!(
            document["Statement"][0]["Resource"],
            serde_json::json!([
                "arn:*:ssm:*::document/AWS-RunShellScript",
                "arn:*:ssm:*::document/AWS-RunPowerShellScript",
                "arn:*:ssm:*::document/AWS-RunPatchBaseline"
            ])
        );
        // Without an output bucket, the S3 statement disappears (AWS::NoValue).
        assert!(allowed_actions(document).iter().all(|a| !a.starts_with("s3:")));
        assert_eq!(role.max_session_seconds, Some(3600));
    }

    #[test]
    fn the_output_bucket_adds_s3_reads() {
        let template = target_template().with_params([("OutputBucketName".to_owned(), Param::Str("out".into()))]);
        let role = template.role("ExecutionRole").unwrap();
        assert!(allowed_actions(&role.policies[0].1).contains(&"s3:getobject".to_owned()));
        let instance = template.managed_policy("InstanceOutputPolicy").unwrap();
        assert!(allowed_actions(&instance).contains(&"s3:putobject".to_owned()));
    }

    #[test]
    fn sub_keeps_escaped_literals() {
        let template = target_template();
        let value = template
            .resolve(&serde_json::json!({ "Fn::Sub": "s3://${ExecutionRoleName}/dt=${!dt}/" }))
            .unwrap();
        assert_eq!(value, "s3://muster-execution/dt=${dt}/");
    }
}
