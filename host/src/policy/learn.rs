//! `warden policy learn`: from the audit records of runs a person considers
//! good, the least-privilege policy that would have allowed exactly what
//! they did, as TOML with a comment on every line saying why. Pure: records
//! in, text out, no I/O. Memory is bounded whatever the logs hold: a
//! fixed number of tools, fields, distinct values, hosts and runs is kept,
//! and past each bound the learner notes what it left out rather than
//! growing (and proposes nothing it cannot justify).

use crate::audit::{Event, Kind, Record};
use crate::policy::Verdict;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Most tools learned; records of others are counted and named in a note.
const MAX_TOOLS: usize = 256;
/// Most argument fields learned per tool.
const MAX_FIELDS: usize = 64;
/// Most distinct values kept per field; `one_of` is proposed up to
/// [`MAX_ENUM`] of them.
const MAX_DISTINCT: usize = MAX_ENUM + 1;
/// Most distinct values a field may take for `one_of` to be proposed.
const MAX_ENUM: usize = 5;
/// Most distinct source sets kept per field (for `from`).
const MAX_SOURCE_SETS: usize = 8;
/// Most hosts learned per tool, paths per host.
const MAX_HOSTS: usize = 32;
/// Most run ids remembered (to count runs, and to notice a run whose
/// records are interleaved with another's).
const MAX_RUNS: usize = 100_000;
/// Most tools counted per run.
const MAX_RUN_TOOLS: usize = MAX_TOOLS;
/// Most models learned.
const MAX_MODELS: usize = 32;
/// Most notes kept.
const MAX_NOTES: usize = 64;
/// Longest value kept verbatim (for `one_of` and prefixes).
const MAX_VALUE: usize = 64;
/// Longest common start kept (for `prefix`).
const MAX_PREFIX: usize = 256;

/// What the learner has seen so far.
#[derive(Debug, Default)]
pub struct Learner {
    /// The run whose records come now, and its counts: a log holds one
    /// run's records after another's, so only one run is counted at a
    /// time and folded into `most` when the next begins.
    current: Option<(String, RunCounts)>,
    /// The most any run used, per count.
    most: RunCounts,
    /// Run ids seen (bounded), and how many more there were.
    seen_runs: std::collections::HashSet<String>,
    runs_dropped: u64,
    models: BTreeSet<String>,
    tools: BTreeMap<String, ToolSeen>,
    refused: BTreeMap<String, u64>,
    /// Tools the runs' policy denied by their entry (`decision = "deny"`).
    denied_entries: BTreeSet<String>,
    notes: Vec<String>,
    records: u64,
}

#[derive(Debug, Default, Clone)]
struct RunCounts {
    model_calls: u64,
    tokens: u64,
    /// The most `max_tokens` had to allow: budgets are checked before a
    /// call, against what was used plus the call's estimate.
    tokens_needed: u64,
    steps: u64,
    tool_calls: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct ToolSeen {
    component: Option<String>,
    sha256: Option<String>,
    fs: BTreeMap<String, (String, String)>,
    calls: u64,
    labels: BTreeSet<String>,
    fields: BTreeMap<String, FieldSeen>,
    fields_dropped: bool,
    hosts: BTreeMap<String, HostSeen>,
    hosts_dropped: bool,
}

#[derive(Debug, Default)]
struct HostSeen {
    /// `scheme://host[:port]`.
    origin: String,
    /// The longest path (as segments) every request's path starts with.
    prefix: Option<Vec<String>>,
    /// Whether some request's path was exactly the prefix.
    exact: bool,
    methods: BTreeSet<String>,
    private: bool,
}

#[derive(Debug, Default)]
struct FieldSeen {
    count: u64,
    strings: u64,
    numbers: u64,
    bools: u64,
    too_many: bool,
    /// Values kept as JSON, for `one_of` (strings and numbers).
    values: BTreeMap<String, Value>,
    min: Option<serde_json::Number>,
    max: Option<serde_json::Number>,
    max_chars: usize,
    /// The common start of every string value (bounded).
    prefix: Option<String>,
    /// Every value's sources (distinct sets); `None` once one was not
    /// recorded, or there were too many.
    sources: Option<BTreeSet<Vec<String>>>,
}

impl Learner {
    /// A learner that has seen nothing.
    pub fn new() -> Self {
        Learner::default()
    }

    /// Note something the output will say, bounded.
    fn note(&mut self, text: String) {
        if self.notes.len() < MAX_NOTES && !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }

    fn run(&mut self, id: &str) -> Option<&mut RunCounts> {
        if self
            .current
            .as_ref()
            .is_none_or(|(current, _)| current != id)
        {
            self.fold();
            if self.seen_runs.contains(id) {
                self.note(format!(
                    "the records of run {} are interleaved with another's: budgets count each stretch of it apart, so check them",
                    comment_text(id)
                ));
            } else if self.seen_runs.len() < MAX_RUNS {
                self.seen_runs.insert(id.to_string());
            } else {
                self.runs_dropped += 1;
            }
            self.current = Some((id.to_string(), RunCounts::default()));
        }
        self.current.as_mut().map(|(_, counts)| counts)
    }

    /// Fold the current run's counts into the most any run used.
    fn fold(&mut self) {
        let Some((_, run)) = self.current.take() else {
            return;
        };
        let most = &mut self.most;
        most.model_calls = most.model_calls.max(run.model_calls);
        most.tokens = most.tokens.max(run.tokens);
        most.tokens_needed = most.tokens_needed.max(run.tokens_needed);
        most.steps = most.steps.max(run.steps);
        for (name, n) in run.tool_calls {
            let entry = most.tool_calls.entry(name).or_default();
            *entry = (*entry).max(n);
        }
    }

    fn tool(&mut self, name: &str) -> Option<&mut ToolSeen> {
        if !self.tools.contains_key(name) {
            if self.tools.len() >= MAX_TOOLS {
                self.note(format!(
                    "more than {MAX_TOOLS} tools: later ones are not learned"
                ));
                return None;
            }
            self.tools.insert(name.to_string(), ToolSeen::default());
        }
        self.tools.get_mut(name)
    }

    /// Learn from one record.
    pub fn observe(&mut self, record: &Record) {
        self.records += 1;
        let data = record.data.as_ref().unwrap_or(&Value::Null);
        // A call that happened: allowed, or asked and approved.
        let permitted = record.decision == Verdict::Allow || data.get("approved_by").is_some();
        match (record.kind, record.event) {
            (Kind::Run, Event::Decision) if record.subject == "tools" => {
                if let Some(tools) = data.get("tools").and_then(Value::as_object) {
                    for (name, entry) in tools {
                        let Some(tool) = self.tool(name) else {
                            continue;
                        };
                        let text =
                            |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_string);
                        tool.component = tool.component.take().or(text("component"));
                        tool.sha256 = tool.sha256.take().or(text("sha256"));
                        if let Some(fs) = entry.get("fs").and_then(Value::as_object) {
                            for (guest, mount) in fs.iter().take(MAX_FIELDS) {
                                let dir =
                                    mount.get("dir").and_then(Value::as_str).unwrap_or_default();
                                let mode =
                                    mount.get("mode").and_then(Value::as_str).unwrap_or("ro");
                                tool.fs
                                    .entry(guest.clone())
                                    .or_insert((dir.to_string(), mode.to_string()));
                            }
                        }
                    }
                }
            }
            (Kind::Model, Event::Decision) if record.decision == Verdict::Allow => {
                if self.models.len() < MAX_MODELS {
                    self.models.insert(record.subject.clone());
                } else if !self.models.contains(&record.subject) {
                    self.note(format!(
                        "more than {MAX_MODELS} models: later ones are not allowed"
                    ));
                }
                let estimated = data
                    .get("estimated_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if let Some(run) = self.run(&record.run) {
                    run.model_calls += 1;
                    run.steps += 1;
                    run.tokens_needed = run.tokens_needed.max(run.tokens.saturating_add(estimated));
                }
            }
            (Kind::Model, Event::Decision) => {
                // Refused calls count toward `max_steps` too.
                if let Some(run) = self.run(&record.run) {
                    run.steps += 1;
                }
            }
            (Kind::Model, Event::Outcome) => {
                let usage = data.get("usage").unwrap_or(&Value::Null);
                let tokens = ["input_tokens", "output_tokens"]
                    .iter()
                    .filter_map(|k| usage.get(k).and_then(Value::as_u64))
                    .fold(0u64, u64::saturating_add);
                if let Some(run) = self.run(&record.run) {
                    run.tokens = run.tokens.saturating_add(tokens);
                }
            }
            (Kind::Tool, Event::Decision) if permitted => {
                let name = record.subject.clone();
                if let Some(run) = self.run(&record.run) {
                    run.steps += 1;
                    if run.tool_calls.len() < MAX_RUN_TOOLS || run.tool_calls.contains_key(&name) {
                        *run.tool_calls.entry(name.clone()).or_default() += 1;
                    }
                }
                let arguments = data.get("arguments").cloned().unwrap_or(Value::Null);
                if crate::audit::bound::was_truncated(data, "arguments") {
                    self.note(format!(
                        "a call of `{name}` had its arguments cut in the log (larger than `audit_field`): its argument rules leave that call's values out"
                    ));
                }
                let sources = data.get("sources").cloned().unwrap_or(Value::Null);
                if let Some(tool) = self.tool(&name) {
                    tool.calls += 1;
                    tool.learn_arguments(&arguments, &sources);
                }
            }
            (Kind::Tool, Event::Decision) => {
                if let Some(run) = self.run(&record.run) {
                    run.steps += 1;
                }
                if record.rule == format!("tools.{}", record.subject)
                    && self.denied_entries.len() < MAX_TOOLS
                {
                    self.denied_entries.insert(record.subject.clone());
                }
                *self.refused.entry(record.subject.clone()).or_default() += 1;
                if self.refused.len() > MAX_TOOLS {
                    self.refused.pop_last();
                }
            }
            (Kind::Tool, Event::Outcome) => {
                if let Some(labels) = data.get("labels_added").and_then(Value::as_array) {
                    let labels: Vec<String> = labels
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|l| valid_name(l))
                        .map(str::to_string)
                        .collect();
                    if !labels.is_empty()
                        && let Some(tool) = self.tool(&record.subject)
                    {
                        for label in labels.into_iter().take(MAX_FIELDS) {
                            tool.labels.insert(label);
                        }
                    }
                }
            }
            (Kind::Http, Event::Decision) if permitted => {
                let method = data
                    .get("method")
                    .and_then(Value::as_str)
                    .unwrap_or("GET")
                    .to_string();
                let url = data
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if let Some(tool) = self.tool(&record.subject) {
                    tool.learn_http(&method, &url);
                }
            }
            _ => {}
        }
    }

    /// The policy, as TOML with comments: `source` names the logs (for the
    /// header comment).
    pub fn policy(&self, source: &str) -> String {
        let mut out = String::new();
        let mut most = self.most.clone();
        if let Some((_, run)) = &self.current {
            most.model_calls = most.model_calls.max(run.model_calls);
            most.tokens = most.tokens.max(run.tokens);
            most.tokens_needed = most.tokens_needed.max(run.tokens_needed);
            most.steps = most.steps.max(run.steps);
            for (name, n) in &run.tool_calls {
                let entry = most.tool_calls.entry(name.clone()).or_default();
                *entry = (*entry).max(*n);
            }
        }
        let runs = self.seen_runs.len() as u64 + self.runs_dropped;
        line(
            &mut out,
            &format!(
                "# Learned by `warden policy learn` from {source}: {runs} run(s), {} record(s).",
                self.records
            ),
        );
        line(
            &mut out,
            "# It allows what those runs did and nothing more: review every line before you use it.",
        );
        line(
            &mut out,
            "# Argument rules ask (rather than deny) about values the runs did not show; make them deny once you trust them.",
        );
        let max = |f: &dyn Fn(&RunCounts) -> u64| f(&most);

        let steps = max(&|r| r.steps);
        if steps > 0 {
            out.push_str("\n[limits]\n");
            line(
                &mut out,
                &format!(
                    "max_steps = {}  # the most model + tool calls of one run (refused ones count) was {steps}, with headroom",
                    headroom(steps)
                ),
            );
        }

        if !self.models.is_empty() {
            out.push_str("\n[model]\n");
            let allow: Vec<String> = self.models.iter().map(|m| quoted(m)).collect();
            line(
                &mut out,
                &format!(
                    "allow = [{}]  # the models the runs called",
                    allow.join(", ")
                ),
            );
            let calls = max(&|r| r.model_calls);
            line(
                &mut out,
                &format!(
                    "max_calls = {}  # the most model calls of one run was {calls}, with headroom",
                    headroom(calls)
                ),
            );
            let tokens = max(&|r| r.tokens_needed.max(r.tokens));
            if tokens > 0 {
                line(
                    &mut out,
                    &format!(
                        "max_tokens = {}  # one run needed {tokens} (used so far plus the estimate each call is checked against), with headroom",
                        headroom(tokens)
                    ),
                );
            }
        }

        for (name, tool) in &self.tools {
            if tool.calls == 0 {
                continue;
            }
            out.push('\n');
            line(&mut out, &format!("[tools.{}]", key(name)));
            match &tool.component {
                Some(component) => line(
                    &mut out,
                    &format!(
                        "component = {}  # the component the runs loaded (a path is absolute: make it relative to this file if you move it)",
                        quoted(component)
                    ),
                ),
                None => line(
                    &mut out,
                    "decision = \"deny\"  # the logs do not name its component: add `component` and remove this line",
                ),
            }
            if let Some(sha) = &tool.sha256 {
                line(
                    &mut out,
                    &format!("sha256 = {}  # pinned to the bytes that ran", quoted(sha)),
                );
            }
            let calls = max(&|r| r.tool_calls.get(name).copied().unwrap_or(0));
            line(
                &mut out,
                &format!(
                    "max_calls = {}  # the most calls of one run was {calls} ({} in all), with headroom",
                    headroom(calls),
                    tool.calls
                ),
            );
            let mut labels = tool.labels.clone();
            let from_outside = !tool.hosts.is_empty();
            if from_outside {
                labels.insert("untrusted".into());
            }
            if !labels.is_empty() {
                let why = if from_outside {
                    "its results came from outside (HTTP), and labels the runs saw on them"
                } else {
                    "labels the runs saw on its results"
                };
                let list: Vec<String> = labels.iter().map(|l| quoted(l)).collect();
                line(
                    &mut out,
                    &format!("labels = [{}]  # {why}", list.join(", ")),
                );
            }
            tool.write_http(&mut out, name);
            tool.write_fs(&mut out);
            tool.write_args(&mut out, name);
        }

        let unused = |name: &String| self.tools.get(name).is_none_or(|t| t.calls == 0);
        for name in self
            .denied_entries
            .iter()
            .filter(|n| unused(n) && valid_name(n))
        {
            out.push('\n');
            line(&mut out, &format!("[tools.{name}]"));
            line(
                &mut out,
                &format!(
                    "decision = \"deny\"  # the runs' policy denied it by name ({} call(s) refused); kept, so the agent reads the same refusal",
                    self.refused.get(name).copied().unwrap_or(0)
                ),
            );
        }
        let others: Vec<(&String, &u64)> = self
            .refused
            .iter()
            .filter(|(n, _)| unused(n) && !self.denied_entries.contains(*n))
            .collect();
        if !others.is_empty() {
            out.push('\n');
            line(&mut out, "# Refused in the runs, and not granted here:");
            for (name, n) in others {
                line(
                    &mut out,
                    &format!("#   {} ({n} call(s))", comment_text(name)),
                );
            }
        }
        if self.runs_dropped > 0 {
            line(
                &mut out,
                &format!(
                    "# {} run(s) past the first {MAX_RUNS} were counted for budgets but not remembered",
                    self.runs_dropped
                ),
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                line(&mut out, &format!("# note: {}", comment_text(note)));
            }
        }
        out
    }
}

impl ToolSeen {
    fn learn_arguments(&mut self, arguments: &Value, sources: &Value) {
        // Where each value came from, by its path as the gate wrote it.
        let mut recorded: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for entry in sources.as_array().into_iter().flatten() {
            if let (Some(field), Some(list)) = (
                entry.get("field").and_then(Value::as_str),
                entry.get("sources").and_then(Value::as_array),
            ) {
                recorded.insert(
                    field,
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                );
            }
        }
        let mut stack: Vec<(String, String, &Value)> =
            vec![(String::new(), String::new(), arguments)];
        while let Some((concrete, pattern, value)) = stack.pop() {
            let join = |base: &str, key: &str| {
                if base.is_empty() {
                    key.to_string()
                } else {
                    format!("{base}.{key}")
                }
            };
            match value {
                Value::Object(map) => {
                    for (k, v) in map.iter().take(MAX_FIELDS) {
                        if !valid_name(k) {
                            continue;
                        }
                        stack.push((join(&concrete, k), join(&pattern, k), v));
                    }
                }
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate().take(64) {
                        stack.push((join(&concrete, &i.to_string()), join(&pattern, "*"), v));
                    }
                }
                Value::Null => {}
                leaf => {
                    if pattern.is_empty() {
                        continue;
                    }
                    if !self.fields.contains_key(&pattern) && self.fields.len() >= MAX_FIELDS {
                        self.fields_dropped = true;
                        continue;
                    }
                    let field = self.fields.entry(pattern).or_insert_with(|| FieldSeen {
                        sources: Some(BTreeSet::new()),
                        ..FieldSeen::default()
                    });
                    field.learn(leaf, recorded.get(concrete.as_str()));
                }
            }
        }
    }

    fn learn_http(&mut self, method: &str, url: &str) {
        let Ok(parsed) = url::Url::parse(url) else {
            return;
        };
        let Some(host) = parsed.host_str() else {
            return;
        };
        let origin = match parsed.port() {
            Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
            None => format!("{}://{host}", parsed.scheme()),
        };
        if !self.hosts.contains_key(&origin) && self.hosts.len() >= MAX_HOSTS {
            self.hosts_dropped = true;
            return;
        }
        let private = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        let seen = self.hosts.entry(origin.clone()).or_default();
        seen.origin = origin;
        seen.private |= private;
        if seen.methods.len() < 8 {
            seen.methods.insert(method.to_ascii_uppercase());
        }
        let segments: Vec<String> = parsed
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        match &mut seen.prefix {
            None => {
                seen.exact = true;
                seen.prefix = Some(segments);
            }
            Some(prefix) => {
                let common = prefix
                    .iter()
                    .zip(&segments)
                    .take_while(|(a, b)| a == b)
                    .count();
                if common < prefix.len() {
                    // The prefix shrank: an earlier path was longer than it.
                    seen.exact = false;
                    prefix.truncate(common);
                }
                if segments.len() == prefix.len() {
                    seen.exact = true;
                }
            }
        }
    }

    fn write_http(&self, out: &mut String, name: &str) {
        if self.hosts.is_empty() {
            return;
        }
        let mut rules: Vec<String> = Vec::new();
        let mut methods: BTreeSet<&str> = BTreeSet::new();
        for seen in self.hosts.values() {
            methods.extend(seen.methods.iter().map(String::as_str));
            let prefix = seen.prefix.clone().unwrap_or_default();
            let mut path = String::new();
            for segment in &prefix {
                path.push('/');
                path.push_str(&glob_escape(segment));
            }
            let mut urls = Vec::new();
            if seen.exact {
                urls.push(format!(
                    "{}{}",
                    seen.origin,
                    if path.is_empty() { "/" } else { &path }
                ));
            }
            urls.push(format!("{}{path}/**", seen.origin));
            for url in urls {
                if seen.private {
                    rules.push(format!("{{ url = {}, private = true }}", quoted(&url)));
                } else {
                    rules.push(quoted(&url));
                }
            }
        }
        let methods: Vec<String> = methods.iter().map(|m| quoted(m)).collect();
        line(
            out,
            &format!(
                "http = {{ allow = [{}], methods = [{}] }}  # what `{name}` fetched: each host, the longest path every request to it began with{}",
                rules.join(", "),
                methods.join(", "),
                if self.hosts.values().any(|h| h.private) {
                    "; `private`: the runs reached this machine or a private address"
                } else {
                    ""
                }
            ),
        );
        if self.hosts_dropped {
            line(
                out,
                &format!("# more than {MAX_HOSTS} hosts: later ones are not granted"),
            );
        }
    }

    fn write_fs(&self, out: &mut String) {
        if self.fs.is_empty() {
            return;
        }
        let mounts: Vec<String> = self
            .fs
            .iter()
            .map(|(guest, (dir, mode))| {
                format!(
                    "{} = {{ dir = {}, mode = {} }}",
                    quoted(guest),
                    quoted(dir),
                    quoted(mode)
                )
            })
            .collect();
        line(
            out,
            &format!(
                "fs = {{ {} }}  # as the runs' policy granted it: file access is not decided call by call, so the logs cannot narrow it",
                mounts.join(", ")
            ),
        );
    }

    fn write_args(&self, out: &mut String, name: &str) {
        for (path, field) in &self.fields {
            let rules = field.rules();
            if rules.is_empty() {
                continue;
            }
            let (checks, why): (Vec<String>, Vec<String>) = rules.into_iter().unzip();
            let tables: Vec<String> = checks
                .iter()
                .map(|c| format!("{{ {c}, decision = \"ask\" }}"))
                .collect();
            let value = if tables.len() == 1 {
                tables[0].clone()
            } else {
                format!("[{}]", tables.join(", "))
            };
            line(
                out,
                &format!("args.{} = {value}  # {}", key(path), why.join("; ")),
            );
        }
        if self.fields_dropped {
            line(
                out,
                &format!(
                    "# `{name}` had more than {MAX_FIELDS} argument fields: later ones have no rules"
                ),
            );
        }
    }
}

impl FieldSeen {
    fn learn(&mut self, value: &Value, sources: Option<&Vec<String>>) {
        self.count += 1;
        let text = match value {
            Value::String(s) => {
                self.strings += 1;
                self.max_chars = self.max_chars.max(s.chars().count());
                if s.len() <= MAX_PREFIX {
                    self.prefix = Some(match self.prefix.take() {
                        None => s.clone(),
                        Some(p) => common_prefix(&p, s).to_string(),
                    });
                } else {
                    self.prefix = Some(String::new());
                }
                s.clone()
            }
            Value::Number(n) => {
                self.numbers += 1;
                let lower = |a: &serde_json::Number, b: &serde_json::Number| {
                    crate::policy::args::compare_numbers(a, b) == Some(std::cmp::Ordering::Less)
                };
                if self.min.as_ref().is_none_or(|m| lower(n, m)) {
                    self.min = Some(n.clone());
                }
                if self.max.as_ref().is_none_or(|m| lower(m, n)) {
                    self.max = Some(n.clone());
                }
                n.to_string()
            }
            Value::Bool(b) => {
                self.bools += 1;
                b.to_string()
            }
            _ => return,
        };
        if !self.too_many && text.len() <= MAX_VALUE {
            if self.values.len() < MAX_DISTINCT || self.values.contains_key(&text) {
                self.values.insert(text, value.clone());
            } else {
                self.too_many = true;
            }
        } else {
            self.too_many = true;
        }
        match (&mut self.sources, sources) {
            (Some(sets), Some(list)) if sets.len() < MAX_SOURCE_SETS || sets.contains(list) => {
                sets.insert(list.clone());
            }
            _ => self.sources = None,
        }
    }

    /// The checks to propose, each with why.
    fn rules(&self) -> Vec<(String, String)> {
        let mut rules = Vec::new();
        let kinds = [self.strings > 0, self.numbers > 0, self.bools > 0]
            .iter()
            .filter(|k| **k)
            .count();
        if kinds != 1 {
            return rules;
        }
        let n = self.count;
        let distinct = self.values.len();
        // Where the values came from: the fewest sources that cover every
        // value, the task first, never the model (it vouches for nothing).
        if let Some(sets) = &self.sources
            && let Some(cover) = cover(sets)
        {
            let list: Vec<String> = cover.iter().map(|s| quoted(s)).collect();
            rules.push((
                format!("from = [{}]", list.join(", ")),
                format!("each of its {n} value(s) came from {}", cover.join(" or ")),
            ));
        }
        if !self.too_many && distinct <= MAX_ENUM && (self.strings == 0 || self.max_chars <= 64) {
            let values: Vec<String> = self.values.values().map(toml_value).collect();
            rules.push((
                format!("one_of = [{}]", values.join(", ")),
                format!("it took {distinct} distinct value(s) in {n} call(s)"),
            ));
            return rules;
        }
        if self.numbers > 0 {
            if let (Some(min), Some(max)) = (&self.min, &self.max) {
                rules.push((
                    format!("min = {min}, max = {max}"),
                    format!("the values ranged from {min} to {max}"),
                ));
            }
            return rules;
        }
        if self.strings > 0 {
            let prefix = self.prefix.as_deref().unwrap_or_default();
            let cut = structured_prefix(prefix);
            if !cut.is_empty() {
                rules.push((
                    format!("prefix = {}", quoted(cut)),
                    format!("every value began with {}", comment_text(cut)),
                ));
            }
            let bound = self.max_chars.saturating_mul(2).max(16);
            rules.push((
                format!("max_len = {bound}"),
                format!(
                    "the longest value had {} characters; twice that",
                    self.max_chars
                ),
            ));
        }
        rules
    }
}

/// The fewest sources (in order of trust: `task`, `tool:`, `label:`,
/// `unlabeled`) such that every set holds one; `None` when a value came
/// from nowhere, or only from the model.
fn cover(sets: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    if sets.is_empty() {
        return None;
    }
    let rank = |s: &str| match s {
        "task" => 0,
        _ if s.starts_with("tool:") => 1,
        _ if s.starts_with("label:") => 2,
        "unlabeled" => 3,
        _ => 9,
    };
    let mut left: Vec<&Vec<String>> = sets.iter().collect();
    let mut chosen: Vec<String> = Vec::new();
    while !left.is_empty() {
        let mut candidates: BTreeMap<&str, usize> = BTreeMap::new();
        for set in &left {
            for s in set.iter().filter(|s| rank(s) < 9) {
                *candidates.entry(s.as_str()).or_default() += 1;
            }
        }
        let best = candidates
            .iter()
            .max_by(|a, b| {
                a.1.cmp(b.1)
                    .then(rank(b.0).cmp(&rank(a.0)))
                    .then(b.0.cmp(a.0))
            })
            .map(|(s, _)| s.to_string())?;
        left.retain(|set| !set.contains(&best));
        chosen.push(best);
        if chosen.len() > 4 {
            return None;
        }
    }
    chosen.sort_by_key(|s| (rank(s), s.clone()));
    Some(chosen)
}

/// The budget to propose for `seen`: half again, at least one more.
fn headroom(seen: u64) -> u64 {
    seen.saturating_add(seen.div_ceil(2))
        .max(seen.saturating_add(1))
}

fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let end = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or_else(|| a.len().min(b.len()), |((i, _), _)| i);
    // `end` is a char boundary of `a` (an index from `char_indices`, or a
    // length at which `b` ended on the same characters).
    a.get(..end).unwrap_or_default()
}

/// A common prefix worth a rule: of URLs and paths, up to the last `/`
/// (`https://api.example.com/v1/`); of other text, nothing (a shared first
/// letter means nothing).
fn structured_prefix(prefix: &str) -> &str {
    let structured =
        prefix.starts_with("https://") || prefix.starts_with("http://") || prefix.starts_with('/');
    if !structured {
        return "";
    }
    match prefix.rfind('/') {
        Some(at) if at > "https://".len() || (prefix.starts_with('/') && at > 0) => &prefix[..=at],
        _ => "",
    }
}

/// A tool, field or label name that is safe to write as a key and to
/// read back as the same path.
fn valid_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A TOML key: bare when it can be, else quoted.
fn key(text: &str) -> String {
    if valid_name(text) {
        text.to_string()
    } else {
        quoted(text)
    }
}

/// A TOML string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn toml_value(value: &Value) -> String {
    match value {
        Value::String(s) => quoted(s),
        other => other.to_string(),
    }
}

/// Text for a comment: one line, no control characters, bounded.
fn comment_text(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_control() || crate::transcript::hides(c) {
                ' '
            } else {
                c
            }
        })
        .take(120)
        .collect();
    clean
}

/// Escape glob characters in a literal path segment.
fn glob_escape(segment: &str) -> String {
    let mut out = String::new();
    for c in segment.chars() {
        if "*?[]{}\\".contains(c) {
            out.push('[');
            out.push(c);
            out.push(']');
        } else {
            out.push(c);
        }
    }
    out
}

fn line(out: &mut String, text: &str) {
    out.push_str(text);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Outcome;

    fn record(kind: Kind, event: Event, subject: &str, decision: Verdict, data: Value) -> Record {
        Record {
            seq: 1,
            prev: String::new(),
            ts: String::new(),
            run: "r-1".into(),
            kind,
            event,
            subject: subject.into(),
            decision,
            rule: String::new(),
            detail: String::new(),
            outcome: (event == Event::Outcome).then_some(Outcome::Ok),
            data: Some(data),
        }
    }

    fn learned(records: &[Record]) -> String {
        let mut learner = Learner::new();
        for r in records {
            learner.observe(r);
        }
        learner.policy("test.jsonl")
    }

    #[test]
    fn a_learned_policy_parses_and_allows_exactly_what_ran() {
        let text = learned(&[
            record(
                Kind::Run,
                Event::Decision,
                "tools",
                Verdict::Allow,
                serde_json::json!({
                    "tools": { "pay": { "component": "builtin:text", "sha256": "ab".repeat(32), "fs": {} } }
                }),
            ),
            record(
                Kind::Model,
                Event::Decision,
                "scripted",
                Verdict::Allow,
                serde_json::json!({}),
            ),
            record(
                Kind::Tool,
                Event::Decision,
                "pay",
                Verdict::Allow,
                serde_json::json!({
                    "arguments": { "account": "DE89-1", "amount": 700 },
                    "sources": [ { "field": "account", "sources": ["task", "unlabeled"] }, { "field": "amount", "sources": [] } ]
                }),
            ),
            record(
                Kind::Tool,
                Event::Decision,
                "pay",
                Verdict::Allow,
                serde_json::json!({
                    "arguments": { "account": "DE89-2", "amount": 30 },
                    "sources": [ { "field": "account", "sources": ["tool:records", "unlabeled"] } ]
                }),
            ),
            record(
                Kind::Tool,
                Event::Decision,
                "shell",
                Verdict::Deny,
                serde_json::json!({}),
            ),
        ]);
        let policy = crate::policy::Policy::parse("learned.toml", &text)
            .unwrap_or_else(|e| panic!("{}\n{text}", e.render()));
        assert!(
            text.contains("max_calls = 3  # the most calls of one run was 2"),
            "{text}"
        );
        assert!(
            text.contains("args.account = [{ from = [\"unlabeled\"], decision = \"ask\" }"),
            "{text}"
        );
        assert!(
            text.contains("args.amount = { one_of = [30, 700], decision = \"ask\" }"),
            "{text}"
        );
        assert!(text.contains("#   shell (1 call(s))"), "{text}");
        assert!(policy.tools.contains_key("pay") && !policy.tools.contains_key("shell"));
        // Every call that ran is allowed by what was learned.
        let session = {
            let mut s = crate::policy::Session::default();
            s.observe_task("pay DE89-1 and DE89-2");
            s
        };
        for (account, amount) in [("DE89-1", 700), ("DE89-2", 30)] {
            let args = serde_json::json!({ "account": account, "amount": amount });
            let request = crate::policy::Request::Tool {
                name: "pay",
                arguments: &args,
                schema: None,
            };
            assert_eq!(
                policy.decide(&request, &session).verdict(),
                Verdict::Allow,
                "{text}"
            );
        }
        let args = serde_json::json!({ "account": "DE89-1", "amount": 5000 });
        let request = crate::policy::Request::Tool {
            name: "pay",
            arguments: &args,
            schema: None,
        };
        assert_eq!(policy.decide(&request, &session).verdict(), Verdict::Ask);
    }

    #[test]
    fn http_is_learned_as_the_longest_common_path_and_labels_the_tool() {
        let mut tool = ToolSeen::default();
        tool.learn_http("GET", "https://api.example.com/v1/users/1");
        tool.learn_http("GET", "https://api.example.com/v1/orders");
        tool.learn_http("get", "http://127.0.0.1:8080/x");
        let mut out = String::new();
        tool.write_http(&mut out, "fetch");
        assert!(out.contains("\"https://api.example.com/v1/**\""), "{out}");
        assert!(
            out.contains("{ url = \"http://127.0.0.1:8080/x\", private = true }"),
            "{out}"
        );
        assert!(out.contains("methods = [\"GET\"]"), "{out}");
    }

    #[test]
    fn memory_stays_bounded_on_a_flood_of_fields_and_values() {
        let mut learner = Learner::new();
        for i in 0..5000 {
            let mut args = serde_json::Map::new();
            args.insert(format!("f{i}"), Value::String("x".repeat(i)));
            args.insert("v".into(), Value::String(format!("value {i}")));
            learner.observe(&record(
                Kind::Tool,
                Event::Decision,
                &format!("t{}", i % 300),
                Verdict::Allow,
                serde_json::json!({ "arguments": args }),
            ));
        }
        assert!(learner.tools.len() <= MAX_TOOLS);
        assert!(learner.tools.values().all(|t| t.fields.len() <= MAX_FIELDS));
        assert!(
            learner
                .tools
                .values()
                .flat_map(|t| t.fields.values())
                .all(|f| f.values.len() <= MAX_DISTINCT)
        );
        assert!(learner.notes.len() <= MAX_NOTES);
        let text = learner.policy("flood");
        crate::policy::Policy::parse("learned.toml", &text)
            .unwrap_or_else(|e| panic!("{}", e.render()));
    }

    #[test]
    fn sources_cover_prefers_the_task_and_never_the_model() {
        let sets: BTreeSet<Vec<String>> = [
            vec!["task".to_string(), "unlabeled".into()],
            vec!["tool:records".into(), "unlabeled".into()],
        ]
        .into_iter()
        .collect();
        assert_eq!(cover(&sets), Some(vec!["unlabeled".to_string()]));
        let sets: BTreeSet<Vec<String>> = [vec!["task".to_string(), "unlabeled".into()]]
            .into_iter()
            .collect();
        assert_eq!(cover(&sets), Some(vec!["task".to_string()]));
        let sets: BTreeSet<Vec<String>> = [vec!["model".to_string()]].into_iter().collect();
        assert_eq!(cover(&sets), None);
        let sets: BTreeSet<Vec<String>> = [vec![]].into_iter().collect();
        assert_eq!(cover(&sets), None);
    }
}
