//! `template.yaml` read as CloudFormation reads it, for what "safe to deploy by default" and
//! "visible in operation" promise:
//!
//! - its `Rules` are evaluated for every combination of the parameters they read, and must
//!   accept exactly the combinations the table below accepts; every accepted combination
//!   gives both functions an environment (Globals plus their own variables, as Lambda would
//!   set it) that their start-up accepts, and the refused combinations the functions would
//!   refuse too are refused by the template first;
//! - the public endpoint's limits, encryption and retention are stated;
//! - the dashboard's body is valid JSON once substituted and shows every EMF metric of the
//!   contract and the AWS metrics named in the README; the alarms' metric math is whole.
//!
//! The evaluator knows `Ref`, `Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`, `Fn::GetAtt` and
//! `Fn::If`; anything else fails the test rather than being guessed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proactive_bot::config::{ConfigError, Settings};
use serde_json::{Value, json};

const STACK: &str = "proactive-job-bot";

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
    let text = std::fs::read_to_string(path).expect("template.yaml");
    let yaml: serde_norway::Value = serde_norway::from_str(&text).expect("template.yaml is YAML");
    to_json(yaml)
}

/// YAML to JSON, with CloudFormation's short forms in their long form (`!Ref x` → `{"Ref":
/// x}`, `!GetAtt a.b` → `{"Fn::GetAtt": ["a", "b"]}`, `!Sub s` → `{"Fn::Sub": s}`, …).
fn to_json(yaml: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => json!(b),
        Y::Number(n) => serde_json::to_value(&n).expect("a number"),
        Y::String(s) => json!(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), to_json(v)))
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let value = to_json(tagged.value);
            match tag {
                "Ref" | "Condition" => json!({ tag: value }),
                "GetAtt" => match value {
                    Value::String(s) => {
                        let (resource, attribute) = s.split_once('.').expect("!GetAtt a.b");
                        json!({"Fn::GetAtt": [resource, attribute]})
                    }
                    other => json!({"Fn::GetAtt": other}),
                },
                _ => json!({ format!("Fn::{tag}"): value }),
            }
        }
    }
}

/// One deployment's parameter values: the template's defaults, then the overrides.
struct Deployment<'a> {
    template: &'a Value,
    parameters: BTreeMap<String, String>,
}

impl<'a> Deployment<'a> {
    fn new(template: &'a Value, overrides: &[(&str, &str)]) -> Self {
        let declared = template["Parameters"].as_object().expect("Parameters");
        let mut parameters: BTreeMap<String, String> = declared
            .iter()
            .map(|(name, p)| {
                let default = match &p["Default"] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (name.clone(), default)
            })
            .collect();
        for (name, value) in overrides {
            let declared = &declared
                .get(*name)
                .unwrap_or_else(|| panic!("no parameter {name}"));
            if let Some(allowed) = declared["AllowedValues"].as_array() {
                assert!(
                    allowed.iter().any(|a| a == value),
                    "{name}={value} is not among its AllowedValues {allowed:?}"
                );
            }
            parameters.insert((*name).to_owned(), (*value).to_owned());
        }
        Deployment {
            template,
            parameters,
        }
    }

    /// A string, as CloudFormation resolves it; resources and their attributes resolve to
    /// stand-ins (their names are not known before deployment).
    fn string(&self, value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Object(map) if map.len() == 1 => {
                let (function, argument) = map.iter().next().unwrap();
                match function.as_str() {
                    "Ref" => {
                        let name = argument.as_str().expect("Ref a name");
                        if let Some(value) = self.parameters.get(name) {
                            value.clone()
                        } else if name == "AWS::StackName" {
                            STACK.to_owned()
                        } else if name.starts_with("AWS::") {
                            format!("<{name}>")
                        } else {
                            assert!(
                                self.template["Resources"].get(name).is_some(),
                                "Ref to unknown {name}"
                            );
                            format!("{STACK}-{name}")
                        }
                    }
                    "Fn::GetAtt" => {
                        let resource = argument[0].as_str().expect("GetAtt resource");
                        assert!(
                            self.template["Resources"].get(resource).is_some(),
                            "GetAtt of unknown {resource}"
                        );
                        format!("arn:aws:test:{resource}.{}", argument[1])
                    }
                    other => panic!("the test's evaluator does not know {other} ({value})"),
                }
            }
            other => panic!("not a string: {other}"),
        }
    }

    fn condition(&self, name: &str) -> bool {
        let condition = &self.template["Conditions"][name];
        assert!(!condition.is_null(), "no condition {name}");
        self.boolean(condition)
    }

    /// A condition or a rule's assertion.
    fn boolean(&self, value: &Value) -> bool {
        let map = value.as_object().expect("a condition function");
        assert_eq!(map.len(), 1, "{value}");
        let (function, argument) = map.iter().next().unwrap();
        let items = || argument.as_array().expect("a list").iter();
        match function.as_str() {
            "Fn::Equals" => {
                let pair: Vec<String> = items().map(|v| self.string(v)).collect();
                assert_eq!(pair.len(), 2, "{value}");
                pair[0] == pair[1]
            }
            "Fn::Not" => !self.boolean(&argument[0]),
            "Fn::And" => items().all(|v| self.boolean(v)),
            "Fn::Or" => items().any(|v| self.boolean(v)),
            "Condition" => self.condition(argument.as_str().expect("a name")),
            other => panic!("the test's evaluator does not know {other} ({value})"),
        }
    }

    /// The rules whose assertions fail: empty means CloudFormation accepts the deployment.
    fn refusing_rules(&self) -> BTreeSet<String> {
        let rules = self.template["Rules"].as_object().expect("Rules");
        rules
            .iter()
            .filter(|(_, rule)| {
                let applies = rule
                    .get("RuleCondition")
                    .is_none_or(|condition| self.boolean(condition));
                applies
                    && rule["Assertions"]
                        .as_array()
                        .expect("Assertions")
                        .iter()
                        .any(|assertion| !self.boolean(&assertion["Assert"]))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The environment Lambda gives `function`: Globals' variables, then its own, then
    /// Lambda's own.
    fn environment(&self, function: &str) -> HashMap<String, String> {
        let own = &self.template["Resources"][function]["Properties"]["Environment"]["Variables"];
        let globals = &self.template["Globals"]["Function"]["Environment"]["Variables"];
        let mut env: HashMap<String, String> = [globals, own]
            .into_iter()
            .filter_map(Value::as_object)
            .flatten()
            .map(|(name, value)| (name.clone(), self.string(value)))
            .collect();
        env.insert(
            "AWS_LAMBDA_FUNCTION_NAME".into(),
            format!("{STACK}-{function}"),
        );
        env.insert("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:9001".into());
        env
    }

    fn start(&self, function: &str) -> Result<Settings, ConfigError> {
        let env = self.environment(function);
        Settings::from_lookup(|name| env.get(name).cloned())
    }
}

const APP_ID: &str = "00000000-0000-0000-0000-000000000001";
const SECRET: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:bot-AbCdEf";
const TENANT: &str = "00000000-0000-0000-0000-0000000000aa";
const FUNCTIONS: [&str; 2] = ["MessagesFunction", "DeliveryFunction"];

/// Every combination of the parameters the rules read.
fn combinations() -> Vec<[(&'static str, &'static str); 5]> {
    let mut all = Vec::new();
    for app_id in ["", APP_ID] {
        for secret in ["", SECRET] {
            for app_type in ["MultiTenant", "SingleTenant"] {
                for tenant in ["", TENANT] {
                    for allow in ["false", "true"] {
                        all.push([
                            ("MicrosoftAppId", app_id),
                            ("MicrosoftAppPasswordSecretArn", secret),
                            ("MicrosoftAppType", app_type),
                            ("MicrosoftAppTenantId", tenant),
                            ("AllowAnonymousEmulatorMode", allow),
                        ]);
                    }
                }
            }
        }
    }
    all
}

/// What the template must refuse, and by which rule.
fn expected_refusals(combination: &[(&str, &str); 5]) -> BTreeSet<String> {
    let get = |name: &str| combination.iter().find(|(n, _)| *n == name).unwrap().1;
    let app_id = !get("MicrosoftAppId").is_empty();
    let mut refusals = BTreeSet::new();
    if !app_id && get("AllowAnonymousEmulatorMode") != "true" {
        refusals.insert("AnonymousNeedsConsent".to_owned());
    }
    if app_id && get("MicrosoftAppPasswordSecretArn").is_empty() {
        refusals.insert("AppIdNeedsPassword".to_owned());
    }
    if app_id && get("MicrosoftAppType") == "SingleTenant" && get("MicrosoftAppTenantId").is_empty()
    {
        refusals.insert("SingleTenantNeedsTenantId".to_owned());
    }
    refusals
}

#[test]
fn the_defaults_do_not_deploy_an_open_endpoint() {
    let template = template();
    let anonymous = &template["Parameters"]["AllowAnonymousEmulatorMode"];
    assert_eq!(anonymous["Default"], "false");
    assert_eq!(anonymous["AllowedValues"], json!(["true", "false"]));
    let defaults = Deployment::new(&template, &[]);
    assert_eq!(defaults.parameters["MicrosoftAppId"], "");
    assert_eq!(
        defaults.refusing_rules(),
        BTreeSet::from(["AnonymousNeedsConsent".to_owned()]),
        "`sam deploy` with the defaults must be refused"
    );
}

#[test]
fn the_rules_refuse_exactly_the_combinations_that_cannot_work() {
    let template = template();
    let combinations = combinations();
    assert_eq!(combinations.len(), 32);
    for combination in &combinations {
        let deployment = Deployment::new(&template, combination);
        assert_eq!(
            deployment.refusing_rules(),
            expected_refusals(combination),
            "{combination:?}"
        );
    }
}

#[test]
fn every_deployment_the_template_accepts_starts_and_the_refusals_come_first() {
    let template = template();
    let mut accepted = 0;
    for combination in &combinations() {
        let deployment = Deployment::new(&template, combination);
        let refusals = deployment.refusing_rules();
        for function in FUNCTIONS {
            let started = deployment.start(function);
            if refusals.is_empty() {
                let settings = started
                    .unwrap_or_else(|e| panic!("{function} must start with {combination:?}: {e}"));
                // The Lambda environment keeps the allowlist strict, anonymous or not.
                assert!(!settings.auth.relax_allowlist_without_app_id);
            } else if refusals.contains("AnonymousNeedsConsent") {
                assert!(
                    matches!(started, Err(ConfigError::AnonymousInLambda)),
                    "{function} must refuse {combination:?} as the template does: {:?}",
                    started.map(|_| ())
                );
            } else if refusals.contains("SingleTenantNeedsTenantId") {
                assert!(started.is_err(), "{function}: {combination:?}");
            }
        }
        accepted += usize::from(refusals.is_empty());
    }
    // Anonymous on purpose (8: whatever the other three say), and a working registration
    // (3 of app type × tenant) with its secret, either way AllowAnonymousEmulatorMode is set.
    assert_eq!(accepted, 14);
}

#[test]
fn the_public_endpoint_is_throttled_logged_and_capped() {
    let template = template();
    let api = &template["Globals"]["HttpApi"];
    assert_eq!(
        api["DefaultRouteSettings"],
        json!({
            "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
        })
    );
    let destination = &api["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"];
    let log_group = &template["Resources"][destination[0].as_str().expect("a log group")];
    assert_eq!(log_group["Type"], "AWS::Logs::LogGroup");
    assert!(
        log_group["Properties"]["RetentionInDays"]
            .as_u64()
            .is_some()
    );
    let format = api["AccessLogSettings"]["Format"].as_str().expect("Format");
    let fields: Value = serde_json::from_str(format).expect("the access log format is JSON");
    for field in ["requestId", "ip", "status", "routeKey"] {
        assert!(fields.get(field).is_some(), "{field} in {format}");
    }

    let reserved = &template["Resources"]["MessagesFunction"]["Properties"]["ReservedConcurrentExecutions"]
        ["Fn::If"];
    assert_eq!(reserved[1], json!({"Ref": "MessagesReservedConcurrency"}));
    assert_eq!(reserved[2], json!({"Ref": "AWS::NoValue"}));
    let condition = reserved[0].as_str().expect("a condition");
    for (value, reserves) in [("-1", false), ("0", true), ("20", true)] {
        let deployment = Deployment::new(&template, &[("MessagesReservedConcurrency", value)]);
        assert_eq!(deployment.condition(condition), reserves, "{value}");
    }
}

#[test]
fn queues_are_encrypted_and_tables_outlive_the_stack() {
    let template = template();
    let resources = template["Resources"].as_object().unwrap();
    let of_type = |kind: &str| {
        resources
            .iter()
            .filter(move |(_, r)| r["Type"] == kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(of_type("AWS::SQS::Queue").len(), 3);
    for (name, queue) in of_type("AWS::SQS::Queue") {
        assert_eq!(queue["Properties"]["SqsManagedSseEnabled"], true, "{name}");
    }
    assert_eq!(of_type("AWS::DynamoDB::Table").len(), 2);
    for (name, table) in of_type("AWS::DynamoDB::Table") {
        assert_eq!(table["DeletionPolicy"], "Retain", "{name}");
        assert_eq!(table["UpdateReplacePolicy"], "Retain", "{name}");
    }
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(globals["METRICS_STACK"], json!({"Ref": "AWS::StackName"}));
    assert_eq!(
        globals["ALLOW_ANONYMOUS_EMULATOR_MODE"],
        json!({"Ref": "AllowAnonymousEmulatorMode"})
    );
}

/// The dashboard's body with every `${…}` substituted (numbers for the numeric parameters).
fn dashboard(template: &Value) -> Value {
    let body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody is one !Sub string");
    let mut text = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        text.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing }") + start;
        let name = &rest[start + 2..end];
        let declared = &template["Parameters"][name];
        if declared["Type"] == "Number" {
            text.push_str(&declared["Default"].to_string());
        } else {
            let (resource, _) = name.split_once('.').unwrap_or((name, ""));
            // ServerlessHttpApi: the HTTP API SAM makes for the functions' HttpApi events.
            assert!(
                resource.starts_with("AWS::")
                    || resource == "ServerlessHttpApi"
                    || !declared.is_null()
                    || template["Resources"].get(resource).is_some(),
                "the dashboard names an unknown ${{{name}}}"
            );
            text.push('X');
        }
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the dashboard is not JSON: {e}"))
}

/// Every metric a dashboard widget draws: (namespace, name, dimension names and values).
fn drawn_metrics(dashboard: &Value) -> Vec<(String, String, BTreeMap<String, String>)> {
    let mut drawn = Vec::new();
    for widget in dashboard["widgets"].as_array().expect("widgets") {
        let Some(metrics) = widget["properties"]["metrics"].as_array() else {
            continue;
        };
        for metric in metrics {
            let parts: Vec<&str> = metric
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if parts.len() < 2 {
                continue; // an expression
            }
            let dimensions = parts[2..]
                .chunks(2)
                .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
                .collect();
            drawn.push((parts[0].to_owned(), parts[1].to_owned(), dimensions));
        }
    }
    drawn
}

#[test]
fn the_dashboard_shows_every_emf_metric_and_the_aws_metrics_that_matter() {
    let template = template();
    let drawn = drawn_metrics(&dashboard(&template));
    let has = |namespace: &str, name: &str, dimensions: &[(&str, &str)]| {
        drawn.iter().any(|(ns, n, dims)| {
            ns == namespace
                && n == name
                && dims.len() == dimensions.len()
                && dimensions
                    .iter()
                    .all(|(k, v)| dims.get(*k).is_some_and(|d| d == v))
        })
    };
    // The EMF contract: namespace ProactiveBot, dimensions [Stack, Function] (+ Kind, Reason).
    let emf = |function: &str, names: &[&str]| {
        for name in names {
            assert!(
                has(
                    "ProactiveBot",
                    name,
                    &[("Stack", "X"), ("Function", function)]
                ),
                "{function} {name}"
            );
        }
    };
    emf("messages", &["ColdStart", "TurnDuration"]);
    emf(
        "delivery",
        &[
            "NotificationsSent",
            "NotificationsFailed",
            "NotificationsRetried",
            "NotificationsThrottled",
            "NotificationsDeferred",
            "NotificationsHeld",
            "NotificationsDigested",
            "DeliveryLatency",
            "ColdStart",
        ],
    );
    for kind in [
        "message",
        "conversationUpdate",
        "installationUpdate",
        "event",
        "invoke",
        "other",
    ] {
        let dims = [("Stack", "X"), ("Function", "messages"), ("Kind", kind)];
        assert!(has("ProactiveBot", "Turns", &dims), "Turns {kind}");
    }
    for reason in [
        "not_registered",
        "conversation_gone",
        "rejected",
        "gave_up",
        "malformed",
    ] {
        let dims = [("Stack", "X"), ("Function", "delivery"), ("Reason", reason)];
        assert!(
            has("ProactiveBot", "NotificationsFailed", &dims),
            "{reason}"
        );
    }
    let queue = [("QueueName", "X")];
    assert!(has("AWS/SQS", "ApproximateAgeOfOldestMessage", &queue));
    let depths = drawn
        .iter()
        .filter(|(ns, n, _)| ns == "AWS/SQS" && n == "ApproximateNumberOfMessagesVisible")
        .count();
    assert!(depths >= 2, "the queue's and the dead-letter queue's depth");
    for name in ["Errors", "Throttles"] {
        let functions = drawn
            .iter()
            .filter(|(ns, n, d)| ns == "AWS/Lambda" && n == name && d.contains_key("FunctionName"))
            .count();
        assert_eq!(functions, 2, "Lambda {name} of both functions");
    }
    for name in ["4xx", "5xx"] {
        assert!(has("AWS/ApiGateway", name, &[("ApiId", "X")]), "{name}");
    }
    let body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .unwrap();
    for queue in ["NotificationsQueue", "NotificationsDeadLetterQueue"] {
        assert!(body.contains(&format!("${{{queue}.QueueName}}")), "{queue}");
    }
    for function in FUNCTIONS {
        assert!(body.contains(&format!("${{{function}}}")), "{function}");
    }
    let url = template["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]
        .as_str()
        .expect("a DashboardUrl output");
    assert_eq!(
        url,
        "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?region=${AWS::Region}#dashboards:name=${Dashboard}"
    );
}

#[test]
fn the_alarms_watch_dead_letters_age_and_failure_rate() {
    let template = template();
    let resources = &template["Resources"];
    let dead_letters = &resources["NotificationsDeadLetterAlarm"]["Properties"];
    assert_eq!(
        dead_letters["MetricName"],
        "ApproximateNumberOfMessagesVisible"
    );
    assert_eq!(dead_letters["Threshold"], 0);

    let oldest = &resources["OldestNotificationAlarm"]["Properties"];
    assert_eq!(oldest["MetricName"], "ApproximateAgeOfOldestMessage");
    assert_eq!(
        oldest["Dimensions"][0]["Value"],
        json!({"Fn::GetAtt": ["NotificationsQueue", "QueueName"]})
    );
    assert_eq!(
        oldest["Threshold"],
        json!({"Ref": "OldestNotificationAlarmSeconds"})
    );

    let rate = &resources["NotificationFailureRateAlarm"]["Properties"];
    assert_eq!(
        rate["Threshold"],
        json!({"Ref": "NotificationFailureRateAlarmPercent"})
    );
    assert_eq!(rate["TreatMissingData"], "notBreaching");
    let queries = rate["Metrics"].as_array().expect("metric math");
    let ids: BTreeSet<&str> = queries.iter().map(|q| q["Id"].as_str().unwrap()).collect();
    let returned: Vec<&Value> = queries.iter().filter(|q| q["ReturnData"] == true).collect();
    assert_eq!(returned.len(), 1, "one time series");
    for query in queries {
        if let Some(expression) = query["Expression"].as_str() {
            for word in expression.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
                if word.starts_with(|c: char| c.is_ascii_lowercase()) {
                    assert!(ids.contains(word), "{expression} names an unknown {word}");
                }
            }
        }
        if let Some(metric) = query["MetricStat"]["Metric"].as_object() {
            assert_eq!(metric["Namespace"], "ProactiveBot");
            assert_eq!(
                metric["Dimensions"],
                json!([
                    {"Name": "Stack", "Value": {"Ref": "AWS::StackName"}},
                    {"Name": "Function", "Value": "delivery"},
                ])
            );
        }
    }
    let names: BTreeSet<&str> = queries
        .iter()
        .filter_map(|q| q["MetricStat"]["Metric"]["MetricName"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["NotificationsSent", "NotificationsFailed"])
    );
    // A period with no notification finished is 0 %, never a division by zero.
    let expression = returned[0]["Expression"].as_str().unwrap();
    assert!(
        expression.starts_with("IF(finished > 0,") && expression.ends_with(", 0)"),
        "{expression}"
    );
}
