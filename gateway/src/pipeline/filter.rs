//! Per-signal deadband, minimum interval and heartbeat (maximum interval) filter. Sans-IO.
//!
//! # Rules
//! Each signal has a [`FilterConfig`]: that of the first `[[pipeline.signals]]` entry whose
//! name matches (exact name, or a prefix ending in `*`), else `default_filter`. A reading
//! passes when
//! 1. it is the first of its signal, or at least `min_interval_ms` after the last *passed*
//!    reading of the signal; and
//! 2. its value changed since the last passed value (numbers: by more than `deadband`;
//!    booleans and text: any change; a change of kind counts), or `max_interval_ms` (when
//!    not 0) has gone by since the last passed reading (heartbeat).
//!
//! The deadband compares with the last *passed* value, not the last seen one, so a slow
//! drift is reported once it adds up to more than the deadband.
//!
//! # Decisions
//! - **The key is the signal name alone.** The filter's question is "does this say anything
//!   new about the signal?"; two sources that report the same signal are one stream (and a
//!   source name in the key would let a second producer of a signal double its rate).
//! - **The clock is the caller's `now_ms`.** The pipeline passes the reading's own timestamp
//!   (sample spacing is what matters, so a burst of buffered readings is thinned by when they
//!   were taken, not by when they arrived); tests pass anything.
//! - **Time going backwards** (a clock step, or two sources' clocks disagreeing) restarts the
//!   signal: the reading passes and becomes the reference. This never loses a reading.
//! - **Bounded memory**: at most [`MAX_TRACKED_SIGNALS`] signals are tracked; a new signal
//!   beyond that clears the table first, so every signal passes once more. A source that
//!   invents signal names cannot grow memory without bound.
//! - **Hot path**: the state of a known signal is found by `&str` with no allocation; only a
//!   new signal (its name as key) and a changed text value (reusing the previous buffer when
//!   it fits) allocate. The config lookup (a `HashMap` of exact names, a `Vec` of prefixes)
//!   runs once per new signal and its result is kept with the state.

use std::collections::HashMap;

use waymark_wire::{Reading, Timestamp, Value};

use crate::config::{FilterConfig, PipelineConfig};

/// Most signals whose filter state is kept (see the module docs).
pub const MAX_TRACKED_SIGNALS: usize = 50_000;

/// A [`FilterConfig`] in the filter's units.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rule {
    /// ≥ 0 or +∞, never NaN.
    deadband: f64,
    min_interval_ms: i64,
    /// `None`: no heartbeat.
    max_interval_ms: Option<i64>,
}

impl From<&FilterConfig> for Rule {
    fn from(c: &FilterConfig) -> Self {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Rule {
            // Validation rejects these; be safe anyway: NaN or negative means "any change".
            deadband: if c.deadband >= 0.0 { c.deadband } else { 0.0 },
            min_interval_ms: ms(c.min_interval_ms),
            max_interval_ms: (c.max_interval_ms != 0).then(|| ms(c.max_interval_ms)),
        }
    }
}

/// The last passed value of a signal.
#[derive(Debug, Clone, PartialEq)]
enum Last {
    Num(f64),
    Bool(bool),
    Text(String),
}

#[derive(Debug, Clone)]
struct State {
    rule: Rule,
    last_ms: Timestamp,
    last: Last,
}

impl State {
    fn new(rule: Rule, now_ms: Timestamp, value: &Value) -> Self {
        let last = match value {
            Value::Num(v) => Last::Num(*v),
            Value::Bool(b) => Last::Bool(*b),
            Value::Text(t) => Last::Text(t.clone()),
        };
        State {
            rule,
            last_ms: now_ms,
            last,
        }
    }

    /// Decides for a reading of this signal and, if it passes, makes it the reference.
    fn offer(&mut self, now_ms: Timestamp, value: &Value) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        let pass = if elapsed < 0 {
            // The clock went backwards: restart from this reading.
            true
        } else if elapsed < self.rule.min_interval_ms {
            false
        } else {
            self.rule.max_interval_ms.is_some_and(|max| elapsed >= max) || self.changed(value)
        };
        if pass {
            self.last_ms = now_ms;
            self.remember(value);
        }
        pass
    }

    fn changed(&self, value: &Value) -> bool {
        match (&self.last, value) {
            (Last::Num(last), Value::Num(v)) => num_changed(*last, *v, self.rule.deadband),
            (Last::Bool(last), Value::Bool(v)) => last != v,
            (Last::Text(last), Value::Text(v)) => last != v,
            // A change of kind (a number that becomes text) is a change.
            _ => true,
        }
    }

    fn remember(&mut self, value: &Value) {
        match (&mut self.last, value) {
            (Last::Text(buf), Value::Text(t)) => {
                buf.clear();
                buf.push_str(t);
            }
            (last, Value::Text(t)) => *last = Last::Text(t.clone()),
            (last, Value::Num(v)) => *last = Last::Num(*v),
            (last, Value::Bool(b)) => *last = Last::Bool(*b),
        }
    }
}

/// Whether `v` differs from `last` by more than `deadband`, with non-finite values compared
/// by identity: NaN to NaN and ∞ to the same ∞ are no change; anything else involving a
/// non-finite value is a change.
fn num_changed(last: f64, v: f64, deadband: f64) -> bool {
    if last == v || (last.is_nan() && v.is_nan()) {
        return false;
    }
    if !last.is_finite() || !v.is_finite() {
        return true;
    }
    // An overflowing difference is +∞, which is a change unless the deadband is +∞ too.
    (v - last).abs() > deadband
}

/// Drops readings that say nothing new. See the module docs for the rules.
#[derive(Debug, Clone)]
pub struct Filter {
    default: Rule,
    /// Exact names → (index in `[[pipeline.signals]]`, rule); the first entry of a name.
    exact: HashMap<String, (usize, Rule)>,
    /// Prefixes (without the `*`) in config order, with their index.
    prefixes: Vec<(String, usize, Rule)>,
    state: HashMap<String, State>,
}

impl Filter {
    /// A filter with the rules of `cfg` and no history.
    pub fn new(cfg: &PipelineConfig) -> Self {
        let mut exact = HashMap::new();
        let mut prefixes = Vec::new();
        for (i, s) in cfg.signals.iter().enumerate() {
            let rule = Rule::from(&s.filter());
            match s.name.strip_suffix('*') {
                Some(prefix) => prefixes.push((prefix.to_string(), i, rule)),
                None => {
                    exact.entry(s.name.clone()).or_insert((i, rule));
                }
            }
        }
        Filter {
            default: Rule::from(&cfg.default_filter),
            exact,
            prefixes,
            state: HashMap::new(),
        }
    }

    /// Whether `r` passes, at `now_ms` on the filter's clock (the pipeline passes `r.time`).
    /// A passed reading becomes its signal's reference.
    pub fn keep(&mut self, now_ms: Timestamp, r: &Reading) -> bool {
        if let Some(state) = self.state.get_mut(r.signal.as_str()) {
            return state.offer(now_ms, &r.value);
        }
        if self.state.len() >= MAX_TRACKED_SIGNALS {
            self.state.clear();
        }
        let rule = self.rule_for(&r.signal);
        self.state
            .insert(r.signal.clone(), State::new(rule, now_ms, &r.value));
        true
    }

    /// Signals with state (at most [`MAX_TRACKED_SIGNALS`]).
    pub fn tracked_signals(&self) -> usize {
        self.state.len()
    }

    /// The rule of the first matching entry, else the default.
    fn rule_for(&self, signal: &str) -> Rule {
        let exact = self.exact.get(signal);
        let exact_index = exact.map_or(usize::MAX, |(i, _)| *i);
        self.prefixes
            .iter()
            .take_while(|(_, i, _)| *i < exact_index)
            .find(|(prefix, _, _)| signal.starts_with(prefix.as_str()))
            .map(|(_, _, rule)| *rule)
            .or(exact.map(|(_, rule)| *rule))
            .unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::SignalFilterConfig;

    fn reading(signal: &str, value: Value) -> Reading {
        Reading {
            signal: signal.into(),
            value,
            unit: String::new(),
            time: 0,
            source: "t".into(),
        }
    }
    fn num(signal: &str, v: f64) -> Reading {
        reading(signal, Value::Num(v))
    }
    fn fc(deadband: f64, min_interval_ms: u64, max_interval_ms: u64) -> FilterConfig {
        FilterConfig {
            deadband,
            min_interval_ms,
            max_interval_ms,
        }
    }
    fn entry(name: &str, f: FilterConfig) -> SignalFilterConfig {
        SignalFilterConfig {
            name: name.into(),
            deadband: f.deadband,
            min_interval_ms: f.min_interval_ms,
            max_interval_ms: f.max_interval_ms,
        }
    }
    fn cfg(default: FilterConfig, signals: Vec<SignalFilterConfig>) -> PipelineConfig {
        PipelineConfig {
            default_filter: default,
            signals,
            ..PipelineConfig::default()
        }
    }
    /// Runs `(time, value)` through a filter for one signal; returns which passed.
    fn run(f: FilterConfig, seq: &[(i64, f64)]) -> Vec<bool> {
        let mut filter = Filter::new(&cfg(f, vec![]));
        seq.iter()
            .map(|&(t, v)| filter.keep(t, &num("s", v)))
            .collect()
    }

    #[test]
    fn default_filter_passes_changes_only() {
        assert_eq!(
            run(
                FilterConfig::default(),
                &[(0, 1.0), (1, 1.0), (2, 2.0), (3, 2.0), (3, 1.0)]
            ),
            [true, false, true, false, true]
        );
    }

    #[test]
    fn deadband_is_against_the_last_passed_value() {
        // Differences of exactly the deadband do not pass; more than it does.
        let f = fc(1.0, 0, 0);
        assert_eq!(
            run(f, &[(0, 10.0), (1, 11.0), (2, 9.0), (3, 11.5)]),
            [true, false, false, true]
        );
        // A slow drift of 0.4 per step passes once it adds up to more than 1.
        let drift: Vec<_> = (0..6).map(|i| (i, 10.0 + 0.4 * i as f64)).collect();
        assert_eq!(run(f, &drift), [true, false, false, true, false, false]);
    }

    #[test]
    fn min_interval() {
        let f = fc(0.0, 100, 0);
        assert_eq!(
            run(
                f,
                &[
                    (0, 1.0),
                    (50, 2.0),
                    (99, 3.0),
                    (100, 4.0),
                    (150, 5.0),
                    (200, 4.0),
                    (201, 6.0)
                ]
            ),
            [true, false, false, true, false, false, true]
        );
    }

    #[test]
    fn max_interval_is_a_heartbeat() {
        let f = fc(5.0, 0, 1000);
        assert_eq!(
            run(
                f,
                &[
                    (0, 1.0),
                    (500, 1.0),
                    (999, 2.0),
                    (1000, 1.0),
                    (1500, 1.0),
                    (2000, 1.0)
                ]
            ),
            [true, false, false, true, false, true]
        );
        // The heartbeat never beats the minimum interval.
        let f = fc(0.0, 1000, 1000);
        assert_eq!(
            run(f, &[(0, 1.0), (999, 2.0), (1000, 1.0)]),
            [true, false, true]
        );
    }

    #[test]
    fn booleans_and_text_pass_on_change_regardless_of_deadband() {
        let mut f = Filter::new(&cfg(fc(10.0, 0, 0), vec![]));
        let b = |v| reading("door", Value::Bool(v));
        assert!(f.keep(0, &b(false)));
        assert!(!f.keep(1, &b(false)));
        assert!(f.keep(2, &b(true)));
        assert!(!f.keep(3, &b(true)));
        let t = |v: &str| reading("gear", Value::Text(v.into()));
        assert!(f.keep(0, &t("N")));
        assert!(!f.keep(1, &t("N")));
        assert!(f.keep(2, &t("D1")));
        assert!(f.keep(3, &t("D2")));
        assert!(!f.keep(4, &t("D2")));
        assert!(f.keep(5, &t("a much longer gear name than before")));
        assert!(!f.keep(6, &t("a much longer gear name than before")));
    }

    #[test]
    fn change_of_kind_is_a_change() {
        let mut f = Filter::new(&cfg(fc(10.0, 0, 0), vec![]));
        assert!(f.keep(0, &num("x", 1.0)));
        assert!(f.keep(1, &reading("x", Value::Bool(true))));
        assert!(f.keep(2, &reading("x", Value::Text("1".into()))));
        assert!(f.keep(3, &num("x", 1.0)));
        assert!(!f.keep(4, &num("x", 1.0)));
    }

    #[test]
    fn non_finite_numbers() {
        let f = fc(1.0, 0, 0);
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        assert_eq!(
            run(
                f,
                &[
                    (0, 1.0),
                    (1, nan),
                    (2, nan),
                    (3, 1.0),
                    (4, inf),
                    (5, inf),
                    (6, -inf),
                    (7, 0.5)
                ]
            ),
            [true, true, false, true, true, false, true, true]
        );
        // Differences that overflow are changes.
        assert_eq!(run(f, &[(0, f64::MAX), (1, -f64::MAX)]), [true, true]);
        // An infinite deadband (rejected by validation) passes numbers only on heartbeat.
        assert_eq!(
            run(fc(inf, 0, 10), &[(0, 1.0), (5, 1e300), (10, 2.0)]),
            [true, false, true]
        );
        // A NaN deadband (rejected by validation) behaves as 0.
        assert_eq!(
            run(fc(nan, 0, 0), &[(0, 1.0), (1, 1.0), (2, 1.5)]),
            [true, false, true]
        );
    }

    #[test]
    fn time_going_backwards_restarts_the_signal() {
        let f = fc(0.0, 1000, 0);
        assert_eq!(
            run(
                f,
                &[
                    (10_000, 1.0),
                    (5_000, 2.0),
                    (5_500, 3.0),
                    (6_000, 4.0),
                    (6_000, 5.0)
                ]
            ),
            [true, true, false, true, false]
        );
        // Extreme timestamps do not overflow.
        assert_eq!(
            run(f, &[(i64::MAX, 1.0), (i64::MIN, 2.0), (0, 3.0)]),
            [true, true, true]
        );
    }

    #[test]
    fn signals_are_independent() {
        let mut f = Filter::new(&cfg(fc(0.0, 100, 0), vec![]));
        assert!(f.keep(0, &num("a", 1.0)));
        assert!(f.keep(10, &num("b", 1.0)));
        assert!(!f.keep(20, &num("a", 2.0)));
        assert!(f.keep(100, &num("a", 2.0)));
        assert!(!f.keep(100, &num("b", 2.0)));
        // The source is not part of the key.
        let mut other = num("a", 3.0);
        other.source = "other".into();
        assert!(!f.keep(150, &other));
        assert_eq!(f.tracked_signals(), 2);
    }

    #[test]
    fn config_matching_exact_prefix_and_default() {
        let c = cfg(
            fc(0.0, 0, 0),
            vec![
                entry("Vehicle.Speed", fc(10.0, 0, 0)),
                entry("Vehicle.Cargo.*", fc(1.0, 0, 0)),
                entry("Vehicle.*", fc(100.0, 0, 0)),
            ],
        );
        let f = Filter::new(&c);
        assert_eq!(f.rule_for("Vehicle.Speed").deadband, 10.0);
        assert_eq!(f.rule_for("Vehicle.Cargo.Temperature1").deadband, 1.0);
        assert_eq!(f.rule_for("Vehicle.Cargo").deadband, 100.0);
        assert_eq!(f.rule_for("Vehicle.Powertrain.Range").deadband, 100.0);
        assert_eq!(f.rule_for("Other.Thing").deadband, 0.0);
        assert_eq!(f.rule_for("Vehicle.Speedometer").deadband, 100.0);
    }

    #[test]
    fn first_match_wins_even_across_kinds() {
        // A prefix before an exact name wins for that name (validation reports the exact
        // entry as dead config, but the filter follows the rule anyway).
        let c = cfg(
            FilterConfig::default(),
            vec![
                entry("Vehicle.*", fc(5.0, 0, 0)),
                entry("Vehicle.Speed", fc(1.0, 0, 0)),
                entry("Vehicle.Speed", fc(2.0, 0, 0)),
                entry("Engine.Rpm", fc(3.0, 0, 0)),
                entry("Engine.Rpm", fc(4.0, 0, 0)),
                entry("Engine.*", fc(6.0, 0, 0)),
                entry("*", fc(7.0, 0, 0)),
            ],
        );
        let f = Filter::new(&c);
        assert_eq!(f.rule_for("Vehicle.Speed").deadband, 5.0);
        assert_eq!(f.rule_for("Engine.Rpm").deadband, 3.0);
        assert_eq!(f.rule_for("Engine.Temp").deadband, 6.0);
        assert_eq!(f.rule_for("Cabin.Temp").deadband, 7.0);
        assert_eq!(f.rule_for("").deadband, 7.0);
    }

    #[test]
    fn rule_is_applied_per_signal() {
        let c = cfg(fc(0.0, 0, 0), vec![entry("slow.*", fc(0.0, 1000, 0))]);
        let mut f = Filter::new(&c);
        assert!(f.keep(0, &num("slow.a", 1.0)));
        assert!(!f.keep(500, &num("slow.a", 2.0)));
        assert!(f.keep(0, &num("fast", 1.0)));
        assert!(f.keep(1, &num("fast", 2.0)));
    }

    #[test]
    fn tracked_signals_are_bounded() {
        let mut f = Filter::new(&cfg(FilterConfig::default(), vec![]));
        assert!(f.keep(0, &num("keep", 1.0)));
        assert!(!f.keep(1, &num("keep", 1.0)));
        for i in 0..MAX_TRACKED_SIGNALS {
            f.keep(0, &num(&format!("junk{i}"), 1.0));
        }
        assert!(f.tracked_signals() <= MAX_TRACKED_SIGNALS);
        // The table was cleared once: `keep` passes once more, then is filtered again.
        assert!(f.keep(2, &num("keep", 1.0)));
        assert!(!f.keep(3, &num("keep", 1.0)));
    }

    /// The rules written out plainly, for one signal with non-decreasing times.
    fn oracle(f: FilterConfig, seq: &[(i64, f64)]) -> Vec<bool> {
        let mut last: Option<(i64, f64)> = None;
        seq.iter()
            .map(|&(t, v)| {
                let pass = match last {
                    None => true,
                    Some((lt, lv)) => {
                        let elapsed = (t - lt) as u64;
                        elapsed >= f.min_interval_ms
                            && ((f.max_interval_ms > 0 && elapsed >= f.max_interval_ms)
                                || (v - lv).abs() > f.deadband)
                    }
                };
                if pass {
                    last = Some((t, v));
                }
                pass
            })
            .collect()
    }

    fn filter_config() -> impl Strategy<Value = FilterConfig> {
        (0u32..5, 0u64..500, prop_oneof![Just(0u64), 1u64..3000]).prop_map(|(d, min, max)| {
            // Valid configs only: a heartbeat is never shorter than the minimum interval.
            let max = if max == 0 { 0 } else { max.max(min) };
            fc(f64::from(d) * 0.5, min, max)
        })
    }

    /// Non-decreasing times with small steps and values from a small set (so that
    /// repeats and deadband-sized changes are common).
    fn sequence() -> impl Strategy<Value = Vec<(i64, f64)>> {
        prop::collection::vec((0i64..400, -6i32..6), 1..200).prop_map(|steps| {
            let mut t = 1_700_000_000_000;
            steps
                .into_iter()
                .map(|(dt, v)| {
                    t += dt;
                    (t, f64::from(v) * 0.5)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn never_closer_than_min_interval_and_always_after_max_interval(
            f in filter_config(), seq in sequence()
        ) {
            let passed = run(f, &seq);
            let mut last: Option<i64> = None;
            for (&(t, _), &p) in seq.iter().zip(&passed) {
                if let Some(lt) = last {
                    let elapsed = (t - lt) as u64;
                    if p {
                        prop_assert!(elapsed >= f.min_interval_ms, "passed after {elapsed} ms");
                    }
                    if f.max_interval_ms > 0 && elapsed >= f.max_interval_ms {
                        prop_assert!(p, "held back after {elapsed} ms");
                    }
                } else {
                    prop_assert!(p, "the first reading passes");
                }
                if p {
                    last = Some(t);
                }
            }
        }

        #[test]
        fn matches_the_plain_rules(f in filter_config(), seq in sequence()) {
            prop_assert_eq!(run(f, &seq), oracle(f, &seq));
        }

        #[test]
        fn interleaved_signals_are_filtered_as_if_alone(
            f in filter_config(),
            seq in sequence(),
            signal_of in prop::collection::vec(0usize..3, 200),
        ) {
            let names = ["a", "b", "c"];
            let mut filter = Filter::new(&cfg(f, vec![]));
            let mut per_signal: [Vec<(i64, f64)>; 3] = Default::default();
            let mut got: [Vec<bool>; 3] = Default::default();
            for (i, &(t, v)) in seq.iter().enumerate() {
                let s = signal_of[i];
                per_signal[s].push((t, v));
                got[s].push(filter.keep(t, &num(names[s], v)));
            }
            for s in 0..3 {
                prop_assert_eq!(&got[s], &run(f, &per_signal[s]));
            }
        }
    }
}
