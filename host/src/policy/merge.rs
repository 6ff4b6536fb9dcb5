//! Composition: `include = ["base.toml"]`.
//!
//! The merge rule: a file's includes are applied first, in order, then the
//! file itself, each layer on top of what is below it. A layer may only
//! narrow, key by key (docs/policy.md has the table): a section or entry
//! no lower layer writes is new and the layer's to write; inside one a
//! lower layer writes, every key holds the value written there or its
//! default (no URLs, GET only, the default limits, no model), and the
//! layer may only move it toward narrower. Anything wider is an error
//! unless `widen` lists the key, and then a warning, so it is never
//! silent. Every change is recorded for `warden check`. This module must
//! never take a key from a layer unchecked: every `Raw*` struct is
//! destructured field by field, so a new key does not compile without a
//! rule.

use super::compile::{
    Findings, HTTP_MAX_REQUEST, HTTP_MAX_RESPONSE, HTTP_TIMEOUT, compile, is_glob,
    price_specificity, url_rule,
};
use super::file::{
    At, Instance, MountMode, RawApprovals, RawArgEntry, RawGrants, RawHttp, RawInject, RawLimits,
    RawModel, RawMount, RawPlan, RawPolicy, RawPrice, RawReproducible, RawSecret, RawTool,
    RawUrlRule, Verdict, parse_raw,
};
use super::units::{ByteSize, HumanDuration};
use super::{
    ChangeKind, HostPattern, IncludeChange, IncludeLayer, Limits, Policy, ProviderLimits,
    SourceError, SourceFile,
};
use crate::diagnostic::{Diagnostic, Severity, toml_diagnostics};
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
        includes: Vec::new(),
    };
    let merged = loader.layer(0);
    let Loader {
        files,
        mut found,
        includes,
        ..
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
    policy.includes = includes;
    Ok((policy, files))
}

struct Loader<'r> {
    files: Vec<SourceFile>,
    found: Findings,
    read: &'r mut dyn FnMut(&SourceFile, &str) -> Result<SourceFile, String>,
    /// Files being loaded, for cycle detection.
    stack: Vec<usize>,
    /// What each layer changed, for `warden check`.
    includes: Vec<IncludeLayer>,
}

impl Loader<'_> {
    /// File `index` merged over its includes; `None` if it could not be
    /// parsed (the error is recorded).
    fn layer(&mut self, index: usize) -> Option<RawPolicy> {
        let raw = match parse_raw(index, &self.files[index].text) {
            Ok(raw) => raw,
            Err(errors) => {
                let text = &self.files[index].text;
                let found = toml_diagnostics(&errors, text).into_iter();
                self.found.0.extend(found.map(|d| d.in_file(index)));
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
                    let names: Vec<String> = self.files.iter().map(|f| f.name.clone()).collect();
                    let (merged, changes) = overlay(
                        below,
                        layer,
                        &[],
                        &below_name,
                        &names,
                        &mut self.found,
                        &mut [],
                    );
                    self.includes.push(IncludeLayer {
                        file: name.clone(),
                        below: below_name.clone(),
                        changes,
                    });
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
        let names: Vec<String> = self.files.iter().map(|f| f.name.clone()).collect();
        let (merged, changes) = overlay(
            below,
            raw,
            &widen,
            &below_name,
            &names,
            &mut self.found,
            &mut used,
        );
        self.includes.push(IncludeLayer {
            file: self.files[index].name.clone(),
            below: below_name,
            changes,
        });
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

/// Checks a layer's changes to what lies below it, and records them.
struct Narrowing<'a> {
    widen: &'a [At<String>],
    used: &'a mut [bool],
    below: &'a str,
    found: &'a mut Findings,
    /// The names of the files of this load, by index: relative paths in
    /// two files are compared after resolving each against its own file.
    names: &'a [String],
    changes: Vec<IncludeChange>,
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
                self.change(key, what.clone(), ChangeKind::Widened);
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

    fn change(&mut self, key: &str, what: String, kind: ChangeKind) {
        self.changes.push(IncludeChange {
            key: key.to_string(),
            what,
            kind,
        });
    }

    fn narrowed(&mut self, key: &str, what: String) {
        self.change(key, what, ChangeKind::Narrowed);
    }

    /// A bound where smaller is narrower. `default` is what holds when
    /// the lower layers leave the key unsaid (`None`: no bound at all).
    fn at_most<T: PartialOrd + std::fmt::Display>(
        &mut self,
        key: &str,
        below: Option<At<T>>,
        over: Option<At<T>>,
        default: Option<T>,
    ) -> Option<At<T>> {
        let Some(o) = over else { return below };
        let (effective, said) = match &below {
            Some(b) => (Some(&b.value), true),
            None => (default.as_ref(), false),
        };
        let unsaid = if said { "" } else { " (the default)" };
        match effective {
            Some(e) if o.value > *e => {
                self.widening(key, &o, format!("{} is more than {e}{unsaid}", o.value))
            }
            Some(e) if o.value < *e => self.narrowed(key, format!("{e}{unsaid} -> {}", o.value)),
            Some(_) => {}
            None => self.narrowed(key, format!("no bound -> {}", o.value)),
        }
        Some(o)
    }

    /// A value with no order (a provider, a component, a fixed clock): an
    /// including file may only repeat it. Where the lower layers leave it
    /// unsaid, `unsaid` says what holds instead (setting it is then a
    /// change from that, so widening); `None`: nothing holds, and setting
    /// it grants nothing.
    fn same<T: PartialEq + std::fmt::Display>(
        &mut self,
        key: &str,
        below: Option<At<T>>,
        over: Option<At<T>>,
        unsaid: Option<&str>,
        equal: impl Fn(&At<T>, &At<T>) -> bool,
    ) -> Option<At<T>> {
        match (below, over) {
            (Some(b), Some(o)) => {
                if !equal(&b, &o) {
                    self.widening(
                        key,
                        &o,
                        format!("it changes `{}` to `{}`", b.value, o.value),
                    );
                }
                Some(o)
            }
            (None, Some(o)) => {
                match unsaid {
                    Some(instead) => {
                        self.widening(key, &o, format!("it sets `{}`, where {instead}", o.value))
                    }
                    None => self.change(key, format!("sets `{}`", o.value), ChangeKind::Added),
                }
                Some(o)
            }
            (b, None) => b,
        }
    }

    /// `path` as written in file `file`, resolved against that file's
    /// directory (lexically), so that the same text in two directories
    /// is told apart and two spellings of one path are not.
    fn resolve(&self, file: usize, path: &str) -> String {
        if path.starts_with("builtin:") || path.contains("://") {
            return path.to_string();
        }
        let name = self.names.get(file).map(String::as_str).unwrap_or("");
        let joined = std::path::Path::new(name)
            .parent()
            .unwrap_or(std::path::Path::new(""))
            .join(path);
        let mut parts: Vec<std::path::Component<'_>> = Vec::new();
        for part in joined.components() {
            match part {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir
                    if parts
                        .last()
                        .is_some_and(|p| matches!(p, std::path::Component::Normal(_))) =>
                {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        parts
            .iter()
            .collect::<std::path::PathBuf>()
            .display()
            .to_string()
    }
}

/// Union of two lists (lower layer first), recording what `over` adds.
fn union(
    n: &mut Narrowing<'_>,
    key: &str,
    mut below: Vec<At<String>>,
    over: Vec<At<String>>,
) -> Vec<At<String>> {
    for item in over {
        if !below.contains(&item) {
            n.narrowed(key, format!("adds `{}`", item.value));
            below.push(item);
        }
    }
    below
}

/// A tool's `labels` only add up: the whole result's and each path's.
fn merge_labels(
    n: &mut Narrowing<'_>,
    key: &str,
    mut below: super::file::RawLabels,
    over: super::file::RawLabels,
) -> super::file::RawLabels {
    below.whole = union(n, key, below.whole, over.whole);
    for (path, list) in over.paths {
        let path_key = format!("{key}.{:?}", path.value);
        match below.paths.remove(&path) {
            Some(mine) => {
                let merged = union(n, &path_key, mine, list);
                below.paths.insert(path, merged);
            }
            None => {
                for label in &list {
                    n.narrowed(&path_key, format!("adds `{}`", label.value));
                }
                below.paths.insert(path, list);
            }
        }
    }
    below
}

/// `labels_flow`: on (the default) is narrower than off.
fn merge_flow(
    n: &mut Narrowing<'_>,
    key: &str,
    below: Option<At<bool>>,
    over: Option<At<bool>>,
) -> Option<At<bool>> {
    let Some(o) = over else { return below };
    let before = below.as_ref().is_none_or(|b| b.value);
    match (before, o.value) {
        (true, false) => n.widening(
            key,
            &o,
            "it turns off labels that flow through the tool".into(),
        ),
        (false, true) => n.narrowed(key, "off -> on".into()),
        _ => {}
    }
    Some(o)
}

/// `instance`: per-call (the default) is narrower than per-run, which
/// keeps state between calls.
fn merge_instance(
    n: &mut Narrowing<'_>,
    key: &str,
    below: Option<At<Instance>>,
    over: Option<At<Instance>>,
) -> Option<At<Instance>> {
    let Some(o) = over else { return below };
    let before = below.as_ref().map_or(Instance::PerCall, |b| b.value);
    match (before, o.value) {
        (Instance::PerCall, Instance::PerRun) => n.widening(
            key,
            &o,
            "it keeps one instance for the run, so calls share state".into(),
        ),
        (Instance::PerRun, Instance::PerCall) => n.narrowed(key, "per-run -> per-call".into()),
        _ => {}
    }
    Some(o)
}

/// Every key of the schema is destructured below without `..`, so a key
/// added to a `Raw*` type does not compile until it has a merge rule here
/// (and a row in docs/policy.md): nothing is taken from an include unchecked.
#[allow(clippy::too_many_arguments)]
fn overlay(
    below: RawPolicy,
    over: RawPolicy,
    widen: &[At<String>],
    below_name: &str,
    names: &[String],
    found: &mut Findings,
    used: &mut [bool],
) -> (RawPolicy, Vec<IncludeChange>) {
    let mut n = Narrowing {
        widen,
        used,
        below: below_name,
        found,
        names,
        changes: Vec::new(),
    };
    // `include` and `widen` are each file's own; they are not merged.
    let RawPolicy {
        include: _,
        widen: _,
        limits: b_limits,
        model: b_model,
        agent: b_agent,
        tools: b_tools,
        secrets: b_secrets,
        reproducible: b_reproducible,
        plan: b_plan,
        approvals: b_approvals,
    } = below;
    let RawPolicy {
        include: _,
        widen: _,
        limits: o_limits,
        model: o_model,
        agent: o_agent,
        tools: o_tools,
        secrets: o_secrets,
        reproducible: o_reproducible,
        plan: o_plan,
        approvals: o_approvals,
    } = over;
    check_key_sources(&b_model, &b_secrets, &o_model, &o_secrets, &mut n);
    let merged = RawPolicy {
        include: Vec::new(),
        widen: Vec::new(),
        limits: merge_limits(b_limits, o_limits, &mut n),
        reproducible: merge_reproducible(b_reproducible, o_reproducible, &mut n),
        plan: merge_plan(b_plan, o_plan, &mut n),
        approvals: merge_approvals(b_approvals, o_approvals, &mut n),
        model: merge_model(b_model, o_model, &mut n),
        agent: match (b_agent, o_agent) {
            (Some(b), Some(o)) => Some(merge_grants("agent", b, o, &mut n)),
            (None, Some(o)) => {
                n.change("agent", "a new [agent] section".into(), ChangeKind::Added);
                Some(o)
            }
            (b, None) => b,
        },
        tools: merge_tools(b_tools, o_tools, &mut n),
        secrets: merge_secrets(b_secrets, o_secrets, &mut n),
    };
    (merged, n.changes)
}

/// A section no lower layer writes is the including file's to write.
fn section<T>(
    n: &mut Narrowing<'_>,
    key: &str,
    below: Option<T>,
    over: Option<T>,
) -> Result<(T, T), Option<T>> {
    match (below, over) {
        (Some(b), Some(o)) => Ok((b, o)),
        (None, Some(o)) => {
            n.change(key, format!("a new [{key}] section"), ChangeKind::Added);
            Err(Some(o))
        }
        (b, None) => Err(b),
    }
}

fn merge_limits(
    below: Option<RawLimits>,
    over: Option<RawLimits>,
    n: &mut Narrowing<'_>,
) -> Option<RawLimits> {
    let (b, o) = match section(n, "limits", below, over) {
        Ok(both) => both,
        Err(one) => return one,
    };
    let d = Limits::default();
    let RawLimits {
        memory,
        cpu,
        wall,
        output,
        max_steps,
        max_refusals,
        stdio,
        index,
        audit_field,
    } = o;
    let size = |v: u64| Some(ByteSize(v));
    let time = |v| Some(HumanDuration(v));
    Some(RawLimits {
        memory: n.at_most("limits.memory", b.memory, memory, size(d.memory)),
        cpu: n.at_most("limits.cpu", b.cpu, cpu, time(d.cpu)),
        wall: n.at_most("limits.wall", b.wall, wall, time(d.wall)),
        output: n.at_most("limits.output", b.output, output, size(d.output)),
        max_steps: n.at_most("limits.max_steps", b.max_steps, max_steps, d.max_steps),
        max_refusals: n.at_most(
            "limits.max_refusals",
            b.max_refusals,
            max_refusals,
            Some(d.max_refusals),
        ),
        stdio: n.at_most("limits.stdio", b.stdio, stdio, size(d.stdio)),
        index: n.at_most("limits.index", b.index, index, size(d.index)),
        audit_field: n.at_most(
            "limits.audit_field",
            b.audit_field,
            audit_field,
            size(d.audit_field),
        ),
    })
}

fn merge_reproducible(
    below: Option<RawReproducible>,
    over: Option<RawReproducible>,
    n: &mut Narrowing<'_>,
) -> Option<RawReproducible> {
    let (b, o) = match section(n, "reproducible", below, over) {
        Ok(both) => both,
        Err(one) => return one,
    };
    let RawReproducible { time, random_seed } = o;
    Some(RawReproducible {
        time: n.same("reproducible.time", b.time, time, None, |b, o| {
            b.value == o.value
        }),
        random_seed: n.same(
            "reproducible.random_seed",
            b.random_seed,
            random_seed,
            None,
            |b, o| b.value == o.value,
        ),
    })
}

/// A shorter wait and fewer waiting asks narrow (an ask refused sooner).
fn merge_approvals(
    below: Option<RawApprovals>,
    over: Option<RawApprovals>,
    n: &mut Narrowing<'_>,
) -> Option<RawApprovals> {
    let (b, o) = match section(n, "approvals", below, over) {
        Ok(both) => both,
        Err(one) => return one,
    };
    let d = super::Approvals::default();
    let RawApprovals {
        timeout,
        max_pending,
    } = o;
    Some(RawApprovals {
        timeout: n.at_most(
            "approvals.timeout",
            b.timeout,
            timeout,
            Some(HumanDuration(d.timeout)),
        ),
        max_pending: n.at_most(
            "approvals.max_pending",
            b.max_pending,
            max_pending,
            Some(d.max_pending),
        ),
    })
}

/// Requiring a plan narrows (fewer sinks once labeled); an including file
/// that turns off a plan its include requires widens.
fn merge_plan(
    below: Option<RawPlan>,
    over: Option<RawPlan>,
    n: &mut Narrowing<'_>,
) -> Option<RawPlan> {
    let (b, o) = match section(n, "plan", below, over) {
        Ok(both) => both,
        Err(one) => return one,
    };
    let RawPlan { required } = o;
    let below_required = b.required.as_ref().is_some_and(|r| r.value);
    let required = match required {
        Some(o) => {
            if below_required && !o.value {
                n.widening(
                    "plan.required",
                    &o,
                    "it turns off the plan required below".to_string(),
                );
            } else if o.value && !below_required {
                n.narrowed("plan.required", "false -> true".to_string());
            }
            Some(o)
        }
        None => b.required,
    };
    Some(RawPlan { required })
}

/// The price `prices` charges for the model `name`: the most specific
/// matching pattern's, as the compiled policy looks it up.
fn price_of<'p>(
    prices: &'p BTreeMap<At<String>, At<RawPrice>>,
    name: &str,
) -> Option<(&'p str, RawPrice)> {
    prices
        .iter()
        .filter(|(pattern, _)| {
            Glob::new(&pattern.value).is_ok_and(|g| g.compile_matcher().is_match(name))
        })
        .max_by_key(|(pattern, _)| price_specificity(&pattern.value))
        .map(|(pattern, price)| (pattern.value.as_str(), price.value))
}

fn allows(allow: &[At<String>], name: &str) -> bool {
    allow.iter().any(|p| {
        p.value == name || Glob::new(&p.value).is_ok_and(|g| g.compile_matcher().is_match(name))
    })
}

fn merge_model(
    below: Option<RawModel>,
    over: Option<RawModel>,
    n: &mut Narrowing<'_>,
) -> Option<RawModel> {
    let (b, o) = match section(n, "model", below, over) {
        Ok(both) => both,
        Err(one) => return one,
    };
    let RawModel {
        provider,
        api_key_env,
        api_key_file,
        timeout,
        max_response,
        max_retries,
        allow,
        max_calls,
        max_tokens,
        max_tokens_per_call,
        max_cost_usd,
        prices,
        deny,
        redact,
        labels,
    } = o;
    // Unsaid in a [model] a lower layer writes: no model at all.
    let base_allow = b.allow.clone().unwrap_or_default();
    let allow = match allow {
        Some(mine) => {
            for pattern in &mine {
                let covered = base_allow.iter().any(|p| p.value == pattern.value)
                    || (!is_glob(&pattern.value) && allows(&base_allow, &pattern.value));
                if !covered {
                    let what = if base_allow.is_empty() {
                        format!("it allows `{}`, and it allows no model", pattern.value)
                    } else {
                        format!("`{}` is not among the models it allows", pattern.value)
                    };
                    n.widening("model.allow", pattern, what);
                }
            }
            let names = |l: &[At<String>]| {
                l.iter()
                    .map(|p| p.value.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if names(&mine) != names(&base_allow) {
                n.narrowed(
                    "model.allow",
                    format!("[{}] -> [{}]", names(&base_allow), names(&mine)),
                );
            }
            Some(mine)
        }
        None => b.allow,
    };
    let cost_budget = b.max_cost_usd.is_some();
    let mut merged_prices = b.prices.clone();
    for (pattern, price) in prices {
        let key = format!("model.prices.{}", pattern.value);
        let mine = price.value;
        let cheaper = |p: RawPrice| mine.input < p.input || mine.output < p.output;
        let dearer = |p: RawPrice| mine.input > p.input || mine.output > p.output;
        if let Some(existing) = b.prices.get(&pattern) {
            if cheaper(existing.value) {
                n.widening(
                    &key,
                    &price,
                    "a lower price stretches the cost budget".into(),
                );
            } else if dearer(existing.value) {
                n.narrowed(&key, "a higher price".into());
            }
        } else if cost_budget && is_glob(&pattern.value) {
            n.widening(
                &key,
                &price,
                "under its `max_cost_usd`, a new glob price could price models for less than it charges, or price models it refuses as unpriced".into(),
            );
        } else if cost_budget {
            match price_of(&b.prices, &pattern.value) {
                Some((via, p)) if cheaper(p) => n.widening(
                    &key,
                    &price,
                    format!("it is cheaper than the price it charges through `{via}`"),
                ),
                Some(_) => n.narrowed(&key, "a higher price".into()),
                None if allows(&base_allow, &pattern.value) => n.widening(
                    &key,
                    &price,
                    format!(
                        "it prices `{}`, which it refuses as unpriced under `max_cost_usd`",
                        pattern.value
                    ),
                ),
                None => n.change(&key, "a new price".into(), ChangeKind::Added),
            }
        } else {
            n.change(&key, "a new price".into(), ChangeKind::Added);
        }
        merged_prices.insert(pattern, price);
    }
    let d = ProviderLimits::default();
    let size = |v: u64| Some(ByteSize(v));
    let resolved =
        |n: &Narrowing<'_>, v: &Option<At<String>>| v.as_ref().map(|v| n.resolve(v.file, &v.value));
    let same_file = resolved(n, &b.api_key_file) == resolved(n, &api_key_file);
    // Unsaid in a [model] below: the command line chooses the provider,
    // and the key comes from the provider's usual variable.
    let key_unsaid = Some("it reads the provider's key from its usual variable");
    let api_key_file = n.same(
        "model.api_key_file",
        b.api_key_file,
        api_key_file,
        key_unsaid,
        |_, _| same_file,
    );
    Some(RawModel {
        provider: n.same(
            "model.provider",
            b.provider,
            provider,
            Some("the command line names the provider"),
            |b, o| b.value == o.value,
        ),
        api_key_env: n.same(
            "model.api_key_env",
            b.api_key_env,
            api_key_env,
            key_unsaid,
            |b, o| b.value == o.value,
        ),
        api_key_file,
        timeout: n.at_most(
            "model.timeout",
            b.timeout,
            timeout,
            Some(HumanDuration(d.timeout)),
        ),
        max_response: n.at_most(
            "model.max_response",
            b.max_response,
            max_response,
            size(d.max_response),
        ),
        max_retries: n.at_most(
            "model.max_retries",
            b.max_retries,
            max_retries,
            Some(d.max_retries),
        ),
        allow,
        max_calls: n.at_most("model.max_calls", b.max_calls, max_calls, None),
        max_tokens: n.at_most("model.max_tokens", b.max_tokens, max_tokens, None),
        max_tokens_per_call: n.at_most(
            "model.max_tokens_per_call",
            b.max_tokens_per_call,
            max_tokens_per_call,
            None,
        ),
        max_cost_usd: n.at_most("model.max_cost_usd", b.max_cost_usd, max_cost_usd, None),
        prices: merged_prices,
        deny: union(n, "model.deny", b.deny, deny),
        redact: union(n, "model.redact", b.redact, redact),
        labels: union(n, "model.labels", b.labels, labels),
    })
}

fn merge_tools(
    mut below: BTreeMap<At<String>, At<RawTool>>,
    over: BTreeMap<At<String>, At<RawTool>>,
    n: &mut Narrowing<'_>,
) -> BTreeMap<At<String>, At<RawTool>> {
    for (name, tool) in over {
        let key = format!("tools.{}", name.value);
        let Some(base) = below.remove(&name) else {
            n.change(&key, "a new tool".into(), ChangeKind::Added);
            below.insert(name, tool);
            continue;
        };
        let (span, file) = (tool.span.clone(), tool.file);
        let b = base.value;
        let RawTool {
            component,
            sha256,
            decision,
            max_calls,
            rate,
            args,
            labels,
            third_party_labels,
            labels_flow,
            deny_when_labeled,
            ask_when_labeled,
            effects,
            instance,
            http,
            fs,
            env,
            inherit_env,
            secrets,
        } = tool.value;
        let resolved = |n: &Narrowing<'_>, v: &Option<At<String>>| {
            v.as_ref().map(|v| n.resolve(v.file, &v.value))
        };
        let same_component = resolved(n, &b.component) == resolved(n, &component);
        let component = n.same(
            &format!("{key}.component"),
            b.component,
            component,
            None,
            |_, _| same_component,
        );
        let sha256 = n.same(&format!("{key}.sha256"), b.sha256, sha256, None, |b, o| {
            b.value.trim().eq_ignore_ascii_case(o.value.trim())
        });
        // Unsaid: allow. Stricter is narrower: allow < ask < deny.
        let decision = match decision {
            Some(od) => {
                let bd = b.decision.as_ref().map_or(Verdict::Allow, |d| d.value);
                let dkey = format!("{key}.decision");
                if od.value < bd {
                    n.widening(&dkey, &od, format!("`{}` is weaker than `{bd}`", od.value));
                } else if od.value > bd {
                    n.narrowed(&dkey, format!("{bd} -> {}", od.value));
                }
                Some(od)
            }
            None => b.decision,
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
                http,
                fs,
                env,
                inherit_env,
                secrets,
            },
            n,
        );
        let merged = RawTool {
            component,
            sha256,
            decision,
            max_calls: n.at_most(&format!("{key}.max_calls"), b.max_calls, max_calls, None),
            rate: n.at_most(&format!("{key}.rate"), b.rate, rate, None),
            args: merge_args(n, &format!("{key}.args"), b.args, args),
            labels: merge_labels(n, &format!("{key}.labels"), b.labels, labels),
            third_party_labels: union(
                n,
                &format!("{key}.third_party_labels"),
                b.third_party_labels,
                third_party_labels,
            ),
            labels_flow: merge_flow(n, &format!("{key}.labels_flow"), b.labels_flow, labels_flow),
            deny_when_labeled: union(
                n,
                &format!("{key}.deny_when_labeled"),
                b.deny_when_labeled,
                deny_when_labeled,
            ),
            ask_when_labeled: union(
                n,
                &format!("{key}.ask_when_labeled"),
                b.ask_when_labeled,
                ask_when_labeled,
            ),
            // A claim, not a grant: an include may add it (recorded), not
            // change it; with it, a grant that can change things is refused.
            effects: n.same(
                &format!("{key}.effects"),
                b.effects,
                effects,
                None,
                |b, o| b.value == o.value,
            ),
            instance: merge_instance(n, &format!("{key}.instance"), b.instance, instance),
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
                span,
                file,
            },
        );
    }
    below
}

/// Argument rules only add up: both layers' rules apply, and the
/// strongest verdict wins, so no rule an include writes can loosen one
/// below it.
fn merge_args(
    n: &mut Narrowing<'_>,
    key: &str,
    mut below: BTreeMap<At<String>, At<RawArgEntry>>,
    over: BTreeMap<At<String>, At<RawArgEntry>>,
) -> BTreeMap<At<String>, At<RawArgEntry>> {
    for (field, entry) in over {
        let key = format!("{key}.{}", field.value);
        let combined = match below.remove(&field) {
            None => {
                n.narrowed(&key, "adds rules".into());
                entry
            }
            Some(base) => {
                let (mut rules, nested) = base.value.into_parts();
                let (more_rules, more_nested) = entry.value.into_parts();
                if !more_rules.is_empty() {
                    n.narrowed(&key, format!("adds {} rule(s)", more_rules.len()));
                }
                rules.extend(more_rules);
                let value =
                    RawArgEntry::from_parts(rules, merge_args(n, &key, nested, more_nested));
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

/// A layer may narrow a grant the layer below made (fewer URLs, methods,
/// directories, variables, secrets; read-only for read-write; smaller
/// sizes). What a grant below leaves unsaid is not granted: a tool with
/// no `http` below has no network, and an include cannot give it one.
fn merge_grants(owner: &str, b: RawGrants, o: RawGrants, n: &mut Narrowing<'_>) -> RawGrants {
    let RawGrants {
        http,
        fs,
        env,
        inherit_env,
        secrets,
    } = o;
    let http = match (b.http, http) {
        (Some(bh), Some(oh)) => Some(merge_http(&format!("{owner}.http"), bh, oh, n)),
        (None, Some(oh)) => {
            n.widening(
                &format!("{owner}.http"),
                &oh,
                format!("`{owner}` has no HTTP grant there"),
            );
            Some(oh)
        }
        (b, None) => b,
    };
    let fs = merge_fs(owner, b.fs, fs, n);
    let mut merged_env = b.env;
    for (var, value) in env {
        let key = format!("{owner}.env");
        match merged_env.get(&var) {
            None => n.widening(&key, &value, format!("it adds `{}`", var.value)),
            Some(existing) if existing.value != value.value => n.widening(
                &key,
                &value,
                format!("it changes the value of `{}`", var.value),
            ),
            Some(_) => {}
        }
        merged_env.insert(var, value);
    }
    let mut subset = |field: &str, b: Vec<At<String>>, o: Vec<At<String>>| {
        if o.is_empty() {
            return b;
        }
        let key = format!("{owner}.{field}");
        for item in &o {
            if !b.contains(item) {
                n.widening(&key, item, format!("it adds `{}`", item.value));
            }
        }
        for item in &b {
            if !o.contains(item) {
                n.narrowed(&key, format!("drops `{}`", item.value));
            }
        }
        o
    };
    let inherit_env = subset("inherit_env", b.inherit_env, inherit_env);
    let secrets = subset("secrets", b.secrets, secrets);
    RawGrants {
        http,
        fs,
        env: merged_env,
        inherit_env,
        secrets,
    }
}

fn merge_fs(
    owner: &str,
    b: BTreeMap<At<String>, At<RawMount>>,
    o: BTreeMap<At<String>, At<RawMount>>,
    n: &mut Narrowing<'_>,
) -> BTreeMap<At<String>, At<RawMount>> {
    if o.is_empty() {
        return b;
    }
    for (guest, mount) in &o {
        let key = format!("{owner}.fs.{}", guest.value);
        let Some(base) = b.get(guest) else {
            n.widening(&key, mount, "it adds a directory".into());
            continue;
        };
        let RawMount { dir, mode, quota } = &mount.value;
        let (bdir, odir) = (
            n.resolve(base.file, &base.value.dir),
            n.resolve(mount.file, dir),
        );
        if bdir != odir {
            n.widening(&key, mount, format!("it maps `{odir}` instead of `{bdir}`"));
        } else if *mode == MountMode::Rw && base.value.mode == MountMode::Ro {
            n.widening(
                &key,
                mount,
                "it makes a read-only directory writable".into(),
            );
        } else if *mode == MountMode::Ro && base.value.mode == MountMode::Rw {
            n.narrowed(&key, "read-write -> read-only".into());
        } else if *mode == MountMode::Rw {
            match (base.value.quota, *quota) {
                (Some(bq), Some(oq)) if oq > bq => {
                    n.widening(&key, mount, format!("its quota {oq} is more than {bq}"))
                }
                (Some(_), None) => n.widening(&key, mount, "it drops the quota".into()),
                (Some(bq), Some(oq)) if oq < bq => n.narrowed(&key, format!("quota {bq} -> {oq}")),
                (None, Some(oq)) => n.narrowed(&key, format!("quota none -> {oq}")),
                _ => {}
            }
        }
    }
    for guest in b.keys() {
        if !o.contains_key(guest) {
            n.narrowed(
                &format!("{owner}.fs.{}", guest.value),
                "drops the directory".into(),
            );
        }
    }
    o
}

/// Whether two URL rules could match one URL. Conservative: only a
/// different scheme, port or host rules it out (paths are assumed to
/// overlap); a rule that does not parse overlaps everything.
fn may_overlap(a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (url_rule(a), url_rule(b)) else {
        return true;
    };
    let port =
        |scheme: &str, port: Option<u16>| port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    if a.0 != b.0 || port(&a.0, a.2) != port(&b.0, b.2) {
        return false;
    }
    match (&a.1, &b.1) {
        (HostPattern::Any, _) | (_, HostPattern::Any) => true,
        (HostPattern::Exact(x), HostPattern::Exact(y)) => x == y,
        (HostPattern::Exact(x), sub @ HostPattern::Subdomains(_))
        | (sub @ HostPattern::Subdomains(_), HostPattern::Exact(x)) => sub.matches(x),
        (HostPattern::Subdomains(x), HostPattern::Subdomains(y)) => {
            x == y || x.ends_with(&format!(".{y}")) || y.ends_with(&format!(".{x}"))
        }
    }
}

/// The first matching URL rule decides a response's labels and whether
/// private addresses are reachable. So an include's rules must keep the
/// order of the rules below, and a kept rule must carry the labels (and
/// no more `private`) of every rule below it that it now answers for: its
/// own and those of dropped earlier rules that may match the same URLs.
fn merge_http(key: &str, b: At<RawHttp>, o: At<RawHttp>, n: &mut Narrowing<'_>) -> At<RawHttp> {
    let RawHttp {
        allow,
        methods,
        max_request,
        max_response,
        timeout,
    } = o.value;
    let base = b.value;
    let allow = if allow.is_empty() {
        base.allow.clone()
    } else {
        let akey = format!("{key}.allow");
        let mut kept = vec![false; base.allow.len()];
        let mut next = 0;
        for rule in &allow {
            let RawUrlRule {
                url,
                labels,
                private,
            } = &rule.value;
            let Some(j) = (next..base.allow.len()).find(|&j| base.allow[j].value.url == *url)
            else {
                let what = if base.allow.iter().any(|r| r.value.url == *url) {
                    format!(
                        "it moves `{url}` before a rule it follows there; the first matching rule decides a response's labels and whether it may reach private addresses"
                    )
                } else {
                    format!("it adds `{url}`")
                };
                n.widening(&akey, rule, what);
                continue;
            };
            kept[j] = true;
            next = j + 1;
            let mut owed: Vec<String> = base.allow[j].value.labels.clone();
            let mut private_ok = base.allow[j].value.private;
            for (k, earlier) in base.allow[..j].iter().enumerate() {
                if !kept[k] && may_overlap(&earlier.value.url, url) {
                    owed.extend(earlier.value.labels.iter().cloned());
                    private_ok &= earlier.value.private;
                }
            }
            if *private && !private_ok {
                n.widening(
                    &akey,
                    rule,
                    format!("it lets `{url}` reach private addresses"),
                );
            }
            owed.sort();
            owed.dedup();
            let missing: Vec<String> = owed
                .into_iter()
                .filter(|l| !labels.contains(l))
                .map(|l| format!("`{l}`"))
                .collect();
            if !missing.is_empty() {
                n.widening(
                    &akey,
                    rule,
                    format!(
                        "responses from `{url}` would no longer be labeled {}",
                        missing.join(", ")
                    ),
                );
            }
        }
        for (rule, kept) in base.allow.iter().zip(&kept) {
            if !kept {
                n.narrowed(&akey, format!("drops `{}`", rule.value.url));
            }
        }
        allow
    };
    let upper = |m: &Option<Vec<At<String>>>| -> Vec<String> {
        m.as_ref()
            .map(|m| m.iter().map(|m| m.value.to_ascii_uppercase()).collect())
            .unwrap_or_else(|| vec!["GET".to_string()])
    };
    let base_methods = upper(&base.methods);
    if let Some(mine) = &methods {
        for method in mine {
            if !base_methods.contains(&method.value.to_ascii_uppercase()) {
                n.widening(
                    &format!("{key}.methods"),
                    method,
                    format!("it adds the method {}", method.value.to_ascii_uppercase()),
                );
            }
        }
        if upper(&methods).len() < base_methods.len() {
            n.narrowed(
                &format!("{key}.methods"),
                format!(
                    "{} -> {}",
                    base_methods.join("/"),
                    upper(&methods).join("/")
                ),
            );
        }
    }
    let size = |v: u64| Some(ByteSize(v));
    At {
        value: RawHttp {
            allow,
            methods: methods.or(base.methods),
            max_request: n.at_most(
                &format!("{key}.max_request"),
                base.max_request,
                max_request,
                size(HTTP_MAX_REQUEST),
            ),
            max_response: n.at_most(
                &format!("{key}.max_response"),
                base.max_response,
                max_response,
                size(HTTP_MAX_RESPONSE),
            ),
            timeout: n.at_most(
                &format!("{key}.timeout"),
                base.timeout,
                timeout,
                Some(HumanDuration(HTTP_TIMEOUT)),
            ),
        },
        span: o.span,
        file: o.file,
    }
}

/// The provider's API key and each secret are values the host holds for
/// one destination: an include may not read a secret below as the API key
/// (sending it to the provider), nor the key below as a new secret
/// (injecting it into requests to another host).
fn check_key_sources(
    b_model: &Option<RawModel>,
    b_secrets: &BTreeMap<At<String>, At<RawSecret>>,
    o_model: &Option<RawModel>,
    o_secrets: &BTreeMap<At<String>, At<RawSecret>>,
    n: &mut Narrowing<'_>,
) {
    let below_env = b_model.as_ref().and_then(|b| b.api_key_env.as_ref());
    let below_file = b_model.as_ref().and_then(|b| b.api_key_file.as_ref());
    if let Some(o) = o_model {
        let mut sources = Vec::new();
        if let Some(env) = &o.api_key_env
            && below_env.is_none_or(|b| b.value != env.value)
        {
            sources.push(("model.api_key_env", env, format!("${}", env.value)));
        }
        if let Some(file) = &o.api_key_file {
            let resolved = n.resolve(file.file, &file.value);
            if below_file.is_none_or(|b| n.resolve(b.file, &b.value) != resolved) {
                sources.push(("model.api_key_file", file, resolved));
            }
        }
        for (key, at, source) in sources {
            let reads = b_secrets
                .iter()
                .find(|(_, s)| secret_source(n, s).as_deref() == Some(source.as_str()));
            if let Some((name, _)) = reads {
                n.widening(
                    key,
                    at,
                    format!(
                        "it sends the value of `secrets.{}` to the model provider",
                        name.value
                    ),
                );
            }
        }
    }
    let Some(b) = b_model else { return };
    let keys: Vec<String> = match (&b.api_key_env, &b.api_key_file) {
        (Some(env), _) => vec![format!("${}", env.value)],
        (None, Some(file)) => vec![n.resolve(file.file, &file.value)],
        (None, None) => vec!["$OPENAI_API_KEY".into(), "$ANTHROPIC_API_KEY".into()],
    };
    for (name, secret) in o_secrets {
        if b_secrets.contains_key(name) || secret.value.inject.is_none() {
            continue;
        }
        if secret_source(n, secret).is_some_and(|s| keys.contains(&s)) {
            n.widening(
                &format!("secrets.{}", name.value),
                secret,
                "it reads the model provider's API key and injects it into HTTP requests".into(),
            );
        }
    }
}

/// Where a secret's value comes from, comparable across files.
fn secret_source(n: &Narrowing<'_>, secret: &At<RawSecret>) -> Option<String> {
    match (&secret.value.from_env, &secret.value.from_file) {
        (Some(var), None) => Some(format!("${var}")),
        (None, Some(path)) => Some(n.resolve(secret.file, path)),
        _ => None,
    }
}

/// A secret below may be repeated, never redefined; a new secret may not
/// read a value a secret below reads and send it somewhere else.
fn merge_secrets(
    mut below: BTreeMap<At<String>, At<RawSecret>>,
    over: BTreeMap<At<String>, At<RawSecret>>,
    n: &mut Narrowing<'_>,
) -> BTreeMap<At<String>, At<RawSecret>> {
    for (name, secret) in over {
        let key = format!("secrets.{}", name.value);
        let source = secret_source(n, &secret);
        let RawSecret {
            from_env,
            from_file,
            inject,
        } = &secret.value;
        match below.get(&name) {
            Some(existing) => {
                let b = &existing.value;
                let inject_field = |i: &Option<RawInject>, f: fn(&RawInject) -> String| {
                    i.as_ref().map(f).unwrap_or_default()
                };
                let fields: [(&str, String, String); 5] = [
                    (
                        "from_env",
                        b.from_env.clone().unwrap_or_default(),
                        from_env.clone().unwrap_or_default(),
                    ),
                    (
                        "from_file",
                        b.from_file
                            .as_ref()
                            .map(|p| n.resolve(existing.file, p))
                            .unwrap_or_default(),
                        from_file
                            .as_ref()
                            .map(|p| n.resolve(secret.file, p))
                            .unwrap_or_default(),
                    ),
                    (
                        "inject.host",
                        inject_field(&b.inject, |i| i.host.clone()),
                        inject_field(inject, |i| i.host.clone()),
                    ),
                    (
                        "inject.header",
                        inject_field(&b.inject, |i| i.header.clone()),
                        inject_field(inject, |i| i.header.clone()),
                    ),
                    (
                        "inject.format",
                        inject_field(&b.inject, |i| i.format.clone().unwrap_or_default()),
                        inject_field(inject, |i| i.format.clone().unwrap_or_default()),
                    ),
                ];
                for (field, was, now) in fields {
                    if was != now {
                        n.widening(
                            &format!("{key}.{field}"),
                            &secret,
                            format!("it redefines the secret: `{was}` -> `{now}`"),
                        );
                    }
                }
            }
            None => {
                let same_source = below
                    .iter()
                    .find(|(_, other)| source.is_some() && secret_source(n, other) == source);
                match same_source {
                    Some((other, existing))
                        if existing.value.inject != *inject && inject.is_some() =>
                    {
                        let to = existing
                            .value
                            .inject
                            .as_ref()
                            .map_or("no host".to_string(), |i| i.host.clone());
                        n.widening(
                            &key,
                            &secret,
                            format!(
                                "it reads the value of `secrets.{}` and sends it elsewhere (there it goes to {to} only)",
                                other.value
                            ),
                        );
                    }
                    _ => n.change(&key, "a new secret".into(), ChangeKind::Added),
                }
            }
        }
        below.insert(name, secret);
    }
    below
}

#[cfg(test)]
mod tests;
