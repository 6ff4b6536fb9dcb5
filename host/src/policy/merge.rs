//! Composition: `include = ["base.toml"]`.
//!
//! The merge rule: a file's includes are applied first, in order, then the
//! file itself, each layer on top of what is below it. A layer may add
//! tools, secrets, labels, deny patterns and argument rules, and may narrow
//! anything the layers below set explicitly (lower a limit or budget, turn
//! allow into ask or deny, drop URLs, methods, directories or secrets from
//! a grant). It may not widen anything they set explicitly (raise a limit,
//! turn deny into allow, change a component or pin, grant more) unless it
//! lists the key in `widen`, and each such widening is reported as a
//! warning, so it is never silent. What the lower layers leave unsaid is
//! denied by default, and granting it is not widening.

use super::compile::{Findings, compile};
use super::file::{
    At, MountMode, RawArgEntry, RawGrants, RawHttp, RawLimits, RawModel, RawPolicy,
    RawReproducible, RawTool, parse_raw,
};
use super::{Policy, SourceError, SourceFile};
use crate::diagnostic::{Diagnostic, Severity, toml_diagnostic};
use globset::Glob;
use std::collections::BTreeMap;

/// How deep includes may nest.
const MAX_DEPTH: usize = 16;

pub(super) fn load(
    root: SourceFile,
    read: &mut dyn FnMut(&SourceFile, &str) -> Result<SourceFile, String>,
) -> Result<(Policy, Vec<SourceFile>), SourceError> {
    let mut loader = Loader {
        files: vec![root],
        found: Findings(Vec::new()),
        read,
        stack: Vec::new(),
    };
    let merged = loader.layer(0);
    let Loader {
        files, mut found, ..
    } = loader;
    let policy = merged.map(|raw| compile(raw, &mut found));
    if found.0.iter().any(|d| d.severity == Severity::Error) || policy.is_none() {
        return Err(SourceError {
            files,
            diagnostics: found.0,
        });
    }
    let mut policy = policy.expect("checked above");
    policy.warnings = found.0;
    Ok((policy, files))
}

struct Loader<'r> {
    files: Vec<SourceFile>,
    found: Findings,
    read: &'r mut dyn FnMut(&SourceFile, &str) -> Result<SourceFile, String>,
    /// Files being loaded, for cycle detection.
    stack: Vec<usize>,
}

impl Loader<'_> {
    /// File `index` merged over its includes; `None` if it could not be
    /// parsed (the error is recorded).
    fn layer(&mut self, index: usize) -> Option<RawPolicy> {
        let raw = match parse_raw(index, &self.files[index].text) {
            Ok(raw) => raw,
            Err(e) => {
                self.found.0.push(toml_diagnostic(&e).in_file(index));
                return None;
            }
        };
        self.stack.push(index);
        let mut base: Option<(RawPolicy, String)> = None;
        for include in &raw.include {
            let Some(included) = self.include(index, include) else {
                continue;
            };
            let name = self.files[included].name.clone();
            let Some(layer) = self.layer(included) else {
                continue;
            };
            base = Some(match base {
                None => (layer, name),
                Some((below, below_name)) => {
                    let merged = overlay(below, layer, &[], &below_name, &mut self.found, &mut []);
                    (merged, format!("{below_name} and {name}"))
                }
            });
        }
        self.stack.pop();
        let widen = raw.widen.clone();
        let Some((below, below_name)) = base else {
            for entry in &widen {
                self.found.0.push(
                    Diagnostic::warning(
                        format!(
                            "`widen` lists `{}` but this file includes nothing to widen",
                            entry.value
                        ),
                        Some(entry.span.clone()),
                    )
                    .in_file(entry.file)
                    .with_help("remove it"),
                );
            }
            return Some(raw);
        };
        let mut used = vec![false; widen.len()];
        let merged = overlay(below, raw, &widen, &below_name, &mut self.found, &mut used);
        for (entry, used) in widen.iter().zip(used) {
            if !used {
                self.found.0.push(
                    Diagnostic::warning(
                        format!(
                            "`widen` lists `{}`, but nothing there is widened",
                            entry.value
                        ),
                        Some(entry.span.clone()),
                    )
                    .in_file(entry.file)
                    .with_help(
                        "remove it: an unused `widen` would let a later edit widen silently",
                    ),
                );
            }
        }
        Some(merged)
    }

    fn include(&mut self, from: usize, include: &At<String>) -> Option<usize> {
        let error = |found: &mut Findings, message: String, help: &str| {
            found.0.push(
                Diagnostic::error(message, Some(include.span.clone()))
                    .in_file(include.file)
                    .with_help(help),
            );
        };
        if self.stack.len() >= MAX_DEPTH {
            error(
                &mut self.found,
                format!("includes nest deeper than {MAX_DEPTH} files"),
                "flatten the includes",
            );
            return None;
        }
        let file = match (self.read)(&self.files[from], &include.value) {
            Ok(file) => file,
            Err(e) => {
                error(
                    &mut self.found,
                    format!("cannot include `{}`: {e}", include.value),
                    "paths are relative to the including file",
                );
                return None;
            }
        };
        if let Some(&cycle_at) = self
            .stack
            .iter()
            .find(|&&i| self.files[i].name == file.name)
        {
            let chain: Vec<&str> = self.stack
                [self.stack.iter().position(|&i| i == cycle_at).unwrap_or(0)..]
                .iter()
                .map(|&i| self.files[i].name.as_str())
                .chain([file.name.as_str()])
                .collect();
            error(
                &mut self.found,
                format!("include cycle: {}", chain.join(" -> ")),
                "a file may not include itself, directly or not",
            );
            return None;
        }
        self.files.push(file);
        Some(self.files.len() - 1)
    }
}

/// Checks a layer's changes to what lies below it.
struct Narrowing<'a> {
    widen: &'a [At<String>],
    used: &'a mut [bool],
    below: &'a str,
    found: &'a mut Findings,
}

impl Narrowing<'_> {
    /// `key` (e.g. `limits.memory`) at `at` widens what is below: allowed
    /// only if `widen` lists it (or a parent key); reported either way.
    fn widening<T>(&mut self, key: &str, at: &At<T>, what: String) {
        let listed = self.widen.iter().position(|w| {
            key == w.value
                || key
                    .strip_prefix(w.value.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        });
        let diagnostic = match listed {
            Some(i) => {
                if let Some(used) = self.used.get_mut(i) {
                    *used = true;
                }
                Diagnostic::warning(
                    format!("`{key}` widens what {} grants: {what}", self.below),
                    Some(at.span.clone()),
                )
                .with_help("allowed because `widen` lists it")
            }
            None => Diagnostic::error(
                format!("`{key}` would widen what {} grants: {what}", self.below),
                Some(at.span.clone()),
            )
            .with_help(format!(
                "an including file may only narrow; to widen deliberately, add \"{key}\" to `widen`"
            )),
        };
        self.found.0.push(diagnostic.in_file(at.file));
    }

    fn at_most<T: PartialOrd + std::fmt::Display + Clone>(
        &mut self,
        key: &str,
        below: Option<At<T>>,
        over: Option<At<T>>,
    ) -> Option<At<T>> {
        match (below, over) {
            (Some(b), Some(o)) => {
                if o.value > b.value {
                    self.widening(key, &o, format!("{} is more than {}", o.value, b.value));
                }
                Some(o)
            }
            (b, o) => o.or(b),
        }
    }
}

fn overlay(
    below: RawPolicy,
    over: RawPolicy,
    widen: &[At<String>],
    below_name: &str,
    found: &mut Findings,
    used: &mut [bool],
) -> RawPolicy {
    let mut n = Narrowing {
        widen,
        used,
        below: below_name,
        found,
    };
    RawPolicy {
        include: Vec::new(),
        widen: Vec::new(),
        limits: merge_limits(below.limits, over.limits, &mut n),
        // Neither wider nor narrower: the including file's choice wins.
        reproducible: match (below.reproducible, over.reproducible) {
            (Some(b), Some(o)) => Some(RawReproducible {
                time: o.time.or(b.time),
                random_seed: o.random_seed.or(b.random_seed),
            }),
            (b, o) => o.or(b),
        },
        model: merge_model(below.model, over.model, &mut n),
        agent: merge_grants_opt("agent", below.agent, over.agent, &mut n),
        tools: merge_tools(below.tools, over.tools, &mut n),
        secrets: {
            let mut secrets = below.secrets;
            for (name, secret) in over.secrets {
                if let Some(existing) = secrets.get(&name)
                    && existing.value != secret.value
                {
                    n.widening(
                        &format!("secrets.{}", name.value),
                        &secret,
                        "it redefines the secret".into(),
                    );
                }
                secrets.insert(name, secret);
            }
            secrets
        },
    }
}

fn merge_limits(
    below: Option<RawLimits>,
    over: Option<RawLimits>,
    n: &mut Narrowing<'_>,
) -> Option<RawLimits> {
    let (b, o) = match (below, over) {
        (Some(b), Some(o)) => (b, o),
        (b, o) => return o.or(b),
    };
    Some(RawLimits {
        memory: n.at_most("limits.memory", b.memory, o.memory),
        cpu: n.at_most("limits.cpu", b.cpu, o.cpu),
        wall: n.at_most("limits.wall", b.wall, o.wall),
        output: n.at_most("limits.output", b.output, o.output),
        max_steps: n.at_most("limits.max_steps", b.max_steps, o.max_steps),
        max_refusals: n.at_most("limits.max_refusals", b.max_refusals, o.max_refusals),
        stdio: n.at_most("limits.stdio", b.stdio, o.stdio),
        index: n.at_most("limits.index", b.index, o.index),
        audit_field: n.at_most("limits.audit_field", b.audit_field, o.audit_field),
    })
}

fn union(mut below: Vec<At<String>>, over: Vec<At<String>>) -> Vec<At<String>> {
    for item in over {
        if !below.contains(&item) {
            below.push(item);
        }
    }
    below
}

fn merge_model(
    below: Option<RawModel>,
    over: Option<RawModel>,
    n: &mut Narrowing<'_>,
) -> Option<RawModel> {
    let (b, o) = match (below, over) {
        (Some(b), Some(o)) => (b, o),
        (b, o) => return o.or(b),
    };
    let allow = match (b.allow, o.allow) {
        (Some(base), Some(mine)) => {
            for pattern in &mine {
                let covered = base.iter().any(|p| {
                    p.value == pattern.value
                        || (!pattern.value.contains(['*', '?', '[', '{'])
                            && Glob::new(&p.value)
                                .is_ok_and(|g| g.compile_matcher().is_match(&pattern.value)))
                });
                if !covered {
                    n.widening(
                        "model.allow",
                        pattern,
                        format!("`{}` is not among the models it allows", pattern.value),
                    );
                }
            }
            Some(mine)
        }
        (b, o) => o.or(b),
    };
    let mut prices = b.prices;
    for (model, price) in o.prices {
        if let Some(existing) = prices.get(&model)
            && (price.value.input < existing.value.input
                || price.value.output < existing.value.output)
        {
            n.widening(
                &format!("model.prices.{}", model.value),
                &price,
                "a lower price stretches the cost budget".into(),
            );
        }
        prices.insert(model, price);
    }
    let same =
        |n: &mut Narrowing<'_>, key: &str, b: Option<At<String>>, o: Option<At<String>>| match (
            b, o,
        ) {
            (Some(b), Some(o)) => {
                if b.value != o.value {
                    n.widening(
                        key,
                        &o,
                        format!("it changes `{}` to `{}`", b.value, o.value),
                    );
                }
                Some(o)
            }
            (b, o) => o.or(b),
        };
    Some(RawModel {
        provider: same(n, "model.provider", b.provider, o.provider),
        api_key_env: same(n, "model.api_key_env", b.api_key_env, o.api_key_env),
        api_key_file: same(n, "model.api_key_file", b.api_key_file, o.api_key_file),
        timeout: n.at_most("model.timeout", b.timeout, o.timeout),
        max_response: n.at_most("model.max_response", b.max_response, o.max_response),
        max_retries: n.at_most("model.max_retries", b.max_retries, o.max_retries),
        allow,
        max_calls: n.at_most("model.max_calls", b.max_calls, o.max_calls),
        max_tokens: n.at_most("model.max_tokens", b.max_tokens, o.max_tokens),
        max_tokens_per_call: n.at_most(
            "model.max_tokens_per_call",
            b.max_tokens_per_call,
            o.max_tokens_per_call,
        ),
        max_cost_usd: n.at_most("model.max_cost_usd", b.max_cost_usd, o.max_cost_usd),
        prices,
        deny: union(b.deny, o.deny),
        redact: union(b.redact, o.redact),
        labels: union(b.labels, o.labels),
    })
}

fn merge_tools(
    mut below: BTreeMap<At<String>, At<RawTool>>,
    over: BTreeMap<At<String>, At<RawTool>>,
    n: &mut Narrowing<'_>,
) -> BTreeMap<At<String>, At<RawTool>> {
    for (name, tool) in over {
        let Some(base) = below.remove(&name) else {
            below.insert(name, tool);
            continue;
        };
        let key = format!("tools.{}", name.value);
        let place = (tool.span.clone(), tool.file);
        let (b, o) = (base.value, tool.value);
        let same_or_widen = |n: &mut Narrowing<'_>,
                             field: &str,
                             b: Option<At<String>>,
                             o: Option<At<String>>| match (b, o) {
            (Some(b), Some(o)) => {
                if b.value != o.value {
                    n.widening(
                        &format!("{key}.{field}"),
                        &o,
                        format!("it changes `{}` to `{}`", b.value, o.value),
                    );
                }
                Some(o)
            }
            (b, o) => o.or(b),
        };
        let component = same_or_widen(n, "component", b.component, o.component);
        let sha256 = same_or_widen(n, "sha256", b.sha256, o.sha256);
        let decision = match (b.decision, o.decision) {
            (Some(bd), Some(od)) => {
                if od.value < bd.value {
                    n.widening(
                        &format!("{key}.decision"),
                        &od,
                        format!("`{}` is weaker than `{}`", od.value, bd.value),
                    );
                }
                Some(od)
            }
            (b, o) => o.or(b),
        };
        let grants = merge_grants(
            &key,
            RawGrants {
                http: b.http,
                fs: b.fs,
                env: b.env,
                inherit_env: b.inherit_env,
                secrets: b.secrets,
            },
            RawGrants {
                http: o.http,
                fs: o.fs,
                env: o.env,
                inherit_env: o.inherit_env,
                secrets: o.secrets,
            },
            n,
        );
        let merged = RawTool {
            component,
            sha256,
            decision,
            max_calls: n.at_most(&format!("{key}.max_calls"), b.max_calls, o.max_calls),
            rate: n.at_most(&format!("{key}.rate"), b.rate, o.rate),
            args: merge_args(b.args, o.args),
            labels: union(b.labels, o.labels),
            deny_when_labeled: union(b.deny_when_labeled, o.deny_when_labeled),
            ask_when_labeled: union(b.ask_when_labeled, o.ask_when_labeled),
            http: grants.http,
            fs: grants.fs,
            env: grants.env,
            inherit_env: grants.inherit_env,
            secrets: grants.secrets,
        };
        below.insert(
            name,
            At {
                value: merged,
                span: place.0,
                file: place.1,
            },
        );
    }
    below
}

/// Argument rules only add up: both layers' rules apply.
fn merge_args(
    mut below: BTreeMap<At<String>, At<RawArgEntry>>,
    over: BTreeMap<At<String>, At<RawArgEntry>>,
) -> BTreeMap<At<String>, At<RawArgEntry>> {
    for (field, entry) in over {
        let combined = match below.remove(&field) {
            None => entry,
            Some(base) => {
                let (mut rules, nested) = base.value.into_parts();
                let (more_rules, more_nested) = entry.value.into_parts();
                rules.extend(more_rules);
                let value = RawArgEntry::from_parts(rules, merge_args(nested, more_nested));
                At {
                    value,
                    span: entry.span,
                    file: entry.file,
                }
            }
        };
        below.insert(field, combined);
    }
    below
}

fn merge_grants_opt(
    owner: &str,
    below: Option<RawGrants>,
    over: Option<RawGrants>,
    n: &mut Narrowing<'_>,
) -> Option<RawGrants> {
    match (below, over) {
        (Some(b), Some(o)) => Some(merge_grants(owner, b, o, n)),
        (b, o) => o.or(b),
    }
}

/// A layer may narrow a grant the layer below made (fewer URLs, methods,
/// directories, secrets; read-only for read-write; smaller sizes), or make
/// one where there was none; it may not grant more.
fn merge_grants(owner: &str, b: RawGrants, o: RawGrants, n: &mut Narrowing<'_>) -> RawGrants {
    let http = match (b.http, o.http) {
        (Some(bh), Some(oh)) => {
            check_http(&format!("{owner}.http"), &bh.value, &oh, n);
            Some(oh)
        }
        (b, o) => o.or(b),
    };
    let fs = if b.fs.is_empty() || o.fs.is_empty() {
        if o.fs.is_empty() { b.fs } else { o.fs }
    } else {
        for (guest, mount) in &o.fs {
            let key = format!("{owner}.fs.{}", guest.value);
            match b.fs.get(guest) {
                None => n.widening(&key, mount, "it adds a directory".into()),
                Some(base) => {
                    if base.value.dir != mount.value.dir {
                        n.widening(
                            &key,
                            mount,
                            format!(
                                "it maps `{}` instead of `{}`",
                                mount.value.dir, base.value.dir
                            ),
                        );
                    } else if base.value.mode == MountMode::Ro && mount.value.mode == MountMode::Rw
                    {
                        n.widening(
                            &key,
                            mount,
                            "it makes a read-only directory writable".into(),
                        );
                    } else if let (Some(bq), Some(oq)) = (base.value.quota, mount.value.quota)
                        && oq > bq
                    {
                        n.widening(&key, mount, format!("its quota {oq} is more than {bq}"));
                    } else if base.value.quota.is_some() && mount.value.quota.is_none() {
                        n.widening(&key, mount, "it drops the quota".into());
                    }
                }
            }
        }
        o.fs
    };
    let subset = |n: &mut Narrowing<'_>, field: &str, b: Vec<At<String>>, o: Vec<At<String>>| {
        if b.is_empty() || o.is_empty() {
            return if o.is_empty() { b } else { o };
        }
        for item in &o {
            if !b.contains(item) {
                n.widening(
                    &format!("{owner}.{field}"),
                    item,
                    format!("it adds `{}`", item.value),
                );
            }
        }
        o
    };
    let inherit_env = subset(n, "inherit_env", b.inherit_env, o.inherit_env);
    let secrets = subset(n, "secrets", b.secrets, o.secrets);
    let mut env = b.env;
    env.extend(o.env);
    RawGrants {
        http,
        fs,
        env,
        inherit_env,
        secrets,
    }
}

fn check_http(key: &str, b: &RawHttp, o: &At<RawHttp>, n: &mut Narrowing<'_>) {
    for rule in &o.value.allow {
        match b.allow.iter().find(|r| r.value.url == rule.value.url) {
            None => n.widening(key, rule, format!("it adds `{}`", rule.value.url)),
            Some(base) if rule.value.private && !base.value.private => n.widening(
                key,
                rule,
                format!("it lets `{}` reach private addresses", rule.value.url),
            ),
            Some(_) => {}
        }
    }
    let methods = |h: &RawHttp| -> Vec<String> {
        h.methods
            .as_ref()
            .map(|m| m.iter().map(|m| m.value.to_ascii_uppercase()).collect())
            .unwrap_or_else(|| vec!["GET".to_string()])
    };
    let base_methods = methods(b);
    for method in methods(&o.value) {
        if !base_methods.contains(&method) {
            n.widening(key, o, format!("it adds the method {method}"));
        }
    }
    let sizes = [
        (
            "max_request",
            b.max_request.as_ref().map(|v| v.value.0),
            o.value.max_request.as_ref().map(|v| v.value.0),
        ),
        (
            "max_response",
            b.max_response.as_ref().map(|v| v.value.0),
            o.value.max_response.as_ref().map(|v| v.value.0),
        ),
    ];
    for (field, base, mine) in sizes {
        if let (Some(base), Some(mine)) = (base, mine)
            && mine > base
        {
            n.widening(
                &format!("{key}.{field}"),
                o,
                format!("{mine} bytes is more than {base}"),
            );
        }
    }
    if let (Some(base), Some(mine)) = (&b.timeout, &o.value.timeout)
        && mine.value > base.value
    {
        n.widening(
            &format!("{key}.timeout"),
            mine,
            format!("{} is longer than {}", mine.value, base.value),
        );
    }
}
