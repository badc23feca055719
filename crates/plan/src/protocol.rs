//! What the preparation driver tells the root process, and how much of it the root process
//! is willing to hold.
//!
//! The driver (src/prepare.py) runs the app's management commands as the service user. It
//! reports its progress as events on a pipe of its own (its fd 3), apart from stdout and
//! stderr, which carry the commands' output only, so nothing a command prints can pass
//! for an event. An event is one line of UTF-8, words separated by one space:
//!
//! ```text
//! setup-done <ms>                          Django started, in <ms> milliseconds
//! step-begin <step>                        a step (migrate, collectstatic, compilemessages) starts
//! migrations [<app_label>.<name> ...]      after migrate succeeded: every migration on disk, sorted
//! step-done <step> <ms>                    the step succeeded
//! lane-end <lane> exit <code>              (lanes side by side only) the lane's process
//! lane-end <lane> signal <n>                 exited, was killed by a signal, or was stopped
//! lane-end <lane> stopped                    by the driver because another lane failed
//! ```
//!
//! Steps that do not depend on one another run side by side in *lanes* ([`lanes`]): after
//! its one Django start the driver forks one process per lane, and each lane reports on
//! pipes of its own (lane 0 on the driver's fd 1, 2 and 3, lane `k` on [`lane_fds`]), so
//! every output line and event is known to come from its lane. The driver reaps the lanes,
//! stops the others when one fails, and then reports how each ended (`lane-end`, on fd 3).
//!
//! The root process trusts none of these bytes. [`LineSplitter`] cuts any stream into
//! lines with a fixed memory bound (a longer line is cut, and what is cut is only
//! counted); [`Parser`] turns the event stream into [`Event`]s and never panics;
//! [`Progress`] accepts an event only when it fits the planned steps of the lane it came
//! from, in order, so a stamp can be written for exactly the steps that reported their
//! own completion. Nothing here does I/O.

use crate::Step;

/// The longest event line the root process accepts (the `migrations` list is the only
/// long one); a longer line is dropped and reported once as malformed.
pub const EVENT_LINE_MAX: usize = 1 << 20;
/// The longest output line logged as it is; a longer one is cut (see [`Line::to_text`]).
pub const LOG_LINE_MAX: usize = 8 << 10;
/// How much of a malformed event line is shown in a warning.
const EXCERPT_MAX: usize = 120;

/// The steps that run, in lanes that run side by side, each lane's steps in order.
/// collectstatic and compilemessages read the app and write files only, never the
/// database, so they need not wait for migrate: with migrate and at least one of them to
/// run, migrate has lane 0 and the others share lane 1. Otherwise one lane holds them all.
pub fn lanes(steps: &[Step]) -> Vec<Vec<Step>> {
    let (migrate, rest): (Vec<Step>, Vec<Step>) = steps.iter().partition(|s| **s == Step::Migrate);
    if migrate.is_empty() || rest.is_empty() {
        vec![steps.to_vec()]
    } else {
        vec![migrate, rest]
    }
}

/// The driver's descriptors for lane `lane` (1 and up): its events, stdout and stderr.
/// Lane 0 reports on the driver's own fd 3, 1 and 2.
pub fn lane_fds(lane: usize) -> [i32; 3] {
    let base = 3 * lane as i32;
    [base + 1, base + 2, base + 3]
}

/// One line of a stream, without its newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    Whole(&'a [u8]),
    /// The line was longer than the splitter's limit: its first bytes, and how many bytes
    /// after them were discarded.
    Cut {
        head: &'a [u8],
        cut: u64,
    },
}

impl Line<'_> {
    /// The line as text for a log: invalid UTF-8 replaced, trailing white space (a
    /// progress bar's carriage return) trimmed, and a cut line marked with
    /// `[... N bytes cut]` (a character split by the cut counts as cut).
    pub fn to_text(&self) -> String {
        match *self {
            Line::Whole(bytes) => String::from_utf8_lossy(bytes).trim_end().to_string(),
            Line::Cut { head, cut } => {
                let kept = complete_utf8_prefix(head);
                let cut = cut.saturating_add((head.len() - kept.len()) as u64);
                format!(
                    "{} [... {cut} bytes cut]",
                    String::from_utf8_lossy(kept).trim_end()
                )
            }
        }
    }
}

/// `bytes` without an incomplete UTF-8 sequence at its end.
fn complete_utf8_prefix(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() => &bytes[..e.valid_up_to()],
        _ => bytes,
    }
}

/// Cuts a byte stream, fed in chunks of any size, into lines. It holds at most `max`
/// bytes however long a line gets: the rest of a longer line, up to its newline, is only
/// counted.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    buf: Vec<u8>,
    cut: u64,
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            max,
            buf: Vec::new(),
            cut: 0,
        }
    }

    /// Feed the next chunk; `each` gets every line it completes.
    pub fn feed(&mut self, mut chunk: &[u8], mut each: impl FnMut(Line<'_>)) {
        while !chunk.is_empty() {
            let (part, rest, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            if ended && self.buf.is_empty() && self.cut == 0 && part.len() <= self.max {
                // The whole line is in this chunk: no copy.
                each(Line::Whole(part));
            } else {
                let take = part.len().min(self.max - self.buf.len());
                self.buf.extend_from_slice(&part[..take]);
                self.cut = self.cut.saturating_add((part.len() - take) as u64);
                if ended {
                    self.emit(&mut each);
                }
            }
            chunk = rest;
        }
    }

    /// The stream ended: `each` gets the unterminated last line, if there is one.
    pub fn finish(&mut self, mut each: impl FnMut(Line<'_>)) {
        if !self.buf.is_empty() || self.cut > 0 {
            self.emit(&mut each);
        }
    }

    /// Bytes held for the line in progress (never more than `max`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn emit(&mut self, each: &mut impl FnMut(Line<'_>)) {
        if self.cut == 0 {
            each(Line::Whole(&self.buf));
        } else {
            each(Line::Cut {
                head: &self.buf,
                cut: self.cut,
            });
        }
        self.buf.clear();
        self.cut = 0;
    }
}

/// One event from the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    SetupDone {
        ms: u64,
    },
    StepBegin(Step),
    StepDone {
        step: Step,
        ms: u64,
    },
    /// Every migration Django finds on disk, as `app_label.name`.
    Migrations(Vec<String>),
    /// How a lane's process ended (lanes side by side only).
    LaneEnd {
        lane: usize,
        end: LaneEnd,
    },
    /// A line that is not an event: why, and the start of the line, escaped.
    Malformed {
        reason: &'static str,
        excerpt: String,
    },
}

/// How a lane's process ended, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneEnd {
    /// It exited with this status.
    Exit(i32),
    /// A signal killed it, not the driver.
    Signal(i32),
    /// The driver stopped it because another lane failed.
    Stopped,
}

impl std::fmt::Display for LaneEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaneEnd::Exit(code) => write!(f, "exit status {code}"),
            LaneEnd::Signal(n) => write!(f, "killed by signal {n}"),
            LaneEnd::Stopped => f.write_str("stopped because another step failed"),
        }
    }
}

/// Turns the event stream, in chunks of any size, into events.
#[derive(Debug)]
pub struct Parser {
    lines: LineSplitter,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser::new()
    }
}

impl Parser {
    pub fn new() -> Parser {
        Parser::with_line_max(EVENT_LINE_MAX)
    }

    fn with_line_max(max: usize) -> Parser {
        Parser {
            lines: LineSplitter::new(max),
        }
    }

    /// The events completed by `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        self.lines.feed(chunk, |line| events.push(parse_line(line)));
        events
    }

    /// The stream ended: an unterminated last line is malformed (the driver was cut off
    /// while writing it).
    pub fn finish(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.lines.finish(|line| {
            events.push(match line {
                Line::Whole(bytes) => {
                    malformed("unterminated line at the end of the stream", bytes)
                }
                cut @ Line::Cut { .. } => parse_line(cut),
            })
        });
        events
    }

    /// Bytes held for the line in progress (never more than [`EVENT_LINE_MAX`]).
    pub fn buffered(&self) -> usize {
        self.lines.buffered()
    }
}

fn parse_line(line: Line<'_>) -> Event {
    let bytes = match line {
        Line::Whole(bytes) => bytes,
        Line::Cut { head, .. } => return malformed("line longer than the limit", head),
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return malformed("not UTF-8", bytes);
    };
    let mut words = text.split(' ');
    let kind = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let event = match (kind, args.as_slice()) {
        ("setup-done", [ms]) => millis(ms).map(|ms| Event::SetupDone { ms }),
        ("step-begin", [step]) => Step::from_name(step).map(Event::StepBegin),
        ("step-done", [step, ms]) => Step::from_name(step)
            .zip(millis(ms))
            .map(|(step, ms)| Event::StepDone { step, ms }),
        ("migrations", names) if names.iter().all(|n| migration_name(n)) => Some(
            Event::Migrations(names.iter().map(|n| n.to_string()).collect()),
        ),
        ("lane-end", [lane, how @ ..]) => lane_end(how).and_then(|end| {
            let lane = number(lane)?;
            usize::try_from(lane)
                .ok()
                .map(|lane| Event::LaneEnd { lane, end })
        }),
        ("setup-done" | "step-begin" | "step-done" | "migrations" | "lane-end", _) => None,
        _ => return malformed("unknown event", bytes),
    };
    event.unwrap_or_else(|| malformed("bad arguments", bytes))
}

fn millis(word: &str) -> Option<u64> {
    number(word)
}

/// A decimal number without sign, of at most 20 digits.
fn number(word: &str) -> Option<u64> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok()
}

fn lane_end(how: &[&str]) -> Option<LaneEnd> {
    let small = |w: &str| number(w).and_then(|n| i32::try_from(n).ok());
    match how {
        ["exit", code] => small(code).map(LaneEnd::Exit),
        ["signal", n] => small(n).map(LaneEnd::Signal),
        ["stopped"] => Some(LaneEnd::Stopped),
        _ => None,
    }
}

/// `app_label.name`, both parts non-empty, no control characters.
fn migration_name(word: &str) -> bool {
    word.split_once('.').is_some_and(|(app, name)| {
        !app.is_empty() && !name.is_empty() && !word.chars().any(char::is_control)
    })
}

fn malformed(reason: &'static str, bytes: &[u8]) -> Event {
    let shown = complete_utf8_prefix(&bytes[..bytes.len().min(EXCERPT_MAX)]);
    let mut excerpt: String = String::from_utf8_lossy(shown).escape_debug().collect();
    if shown.len() < bytes.len() {
        excerpt.push_str("...");
    }
    Event::Malformed { reason, excerpt }
}

/// What an event means for the run, once checked against the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    SetupDone {
        ms: u64,
    },
    /// The step is number `number` of `of` in the plan's order.
    Began {
        step: Step,
        number: usize,
        of: usize,
    },
    /// The step finished: its stamp may be written.
    Finished {
        step: Step,
        ms: u64,
    },
    /// The list of migrations on disk was received during migrate.
    Migrations {
        count: usize,
    },
    /// The driver reported how a lane's process ended.
    LaneEnded {
        lane: usize,
        end: LaneEnd,
    },
    /// The event does not fit the plan or is not an event; it changed nothing.
    Violation(String),
}

/// One lane's steps and how far it got.
#[derive(Debug)]
struct Lane {
    planned: Vec<Step>,
    /// How many of `planned` finished (always a prefix).
    finished: usize,
    /// `planned[finished]` began and has not finished.
    running: bool,
    end: Option<LaneEnd>,
}

impl Lane {
    fn running(&self) -> Option<Step> {
        self.running
            .then(|| self.planned.get(self.finished).copied())
            .flatten()
    }

    fn latest(&self) -> Option<Step> {
        let began = self.finished + usize::from(self.running);
        began.checked_sub(1).map(|i| self.planned[i])
    }

    fn unfinished(&self) -> Option<Step> {
        self.planned.get(self.finished).copied()
    }
}

/// The run as the events tell it, checked against the steps that were planned to run, in
/// their lanes: in each lane, each step must begin after the step before it finished
/// (lane 0's first step after Django started; a further lane's process is forked only
/// after that), and finish before the next begins; events come from the lane whose pipe
/// carried them. An event that does not fit changes nothing, so a step counts as finished
/// only after its own `step-done`, from its own lane, in its turn.
#[derive(Debug)]
pub struct Progress {
    lanes: Vec<Lane>,
    /// Every planned step in run order, for "n of N".
    order: Vec<Step>,
    setup_done: bool,
    migrations: Option<Vec<String>>,
}

impl Progress {
    /// The steps one after the other, in one lane.
    pub fn new(planned: &[Step]) -> Progress {
        Progress::with_lanes(&[planned.to_vec()])
    }

    /// The steps in lanes side by side (see [`lanes`]).
    pub fn with_lanes(lanes: &[Vec<Step>]) -> Progress {
        let mut order: Vec<Step> = lanes.iter().flatten().copied().collect();
        order.sort();
        Progress {
            lanes: lanes
                .iter()
                .map(|planned| Lane {
                    planned: planned.clone(),
                    finished: 0,
                    running: false,
                    end: None,
                })
                .collect(),
            order,
            setup_done: false,
            migrations: None,
        }
    }

    /// How many lanes run side by side.
    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// An event from the driver's own pipe, which is lane 0's.
    pub fn apply(&mut self, event: Event) -> Effect {
        self.apply_from(0, event)
    }

    /// An event that came on lane `lane`'s pipe.
    pub fn apply_from(&mut self, lane: usize, event: Event) -> Effect {
        let violation = |text: String| Effect::Violation(text);
        if lane >= self.lanes.len() {
            return violation(format!("an event on lane {lane}, which does not exist"));
        }
        match event {
            Event::SetupDone { ms } => {
                if lane != 0 {
                    return violation(format!("setup-done from lane {lane}"));
                }
                if self.setup_done {
                    return violation("setup-done repeated".into());
                }
                self.setup_done = true;
                Effect::SetupDone { ms }
            }
            Event::StepBegin(step) => {
                if lane == 0 && !self.setup_done {
                    return violation(format!("step-begin {step} before setup-done"));
                }
                let l = &self.lanes[lane];
                if let Some(running) = l.running() {
                    return violation(format!(
                        "step-begin {step} while {running} has not finished"
                    ));
                }
                match l.planned.get(l.finished) {
                    Some(&next) if next == step => {
                        self.lanes[lane].running = true;
                        Effect::Began {
                            step,
                            number: self.number(step),
                            of: self.order.len(),
                        }
                    }
                    _ => violation(format!("step-begin {step} {}", self.misfit(lane, step))),
                }
            }
            Event::StepDone { step, ms } => {
                let l = &self.lanes[lane];
                let running = l.running();
                if running == Some(step) {
                    let l = &mut self.lanes[lane];
                    l.running = false;
                    l.finished += 1;
                    return Effect::Finished { step, ms };
                }
                let why = match running {
                    None if l.unfinished() == Some(step) => "before it began".into(),
                    Some(running) if l.planned.contains(&step) && !self.is_finished(step) => {
                        format!("while {running} runs")
                    }
                    _ => self.misfit(lane, step),
                };
                violation(format!("step-done {step} {why}"))
            }
            Event::Migrations(names) => {
                if self.lanes[lane].running() != Some(Step::Migrate) {
                    return violation("migrations listed outside the migrate step".into());
                }
                if self.migrations.is_some() {
                    return violation("migrations listed twice".into());
                }
                let count = names.len();
                self.migrations = Some(names);
                Effect::Migrations { count }
            }
            Event::LaneEnd { lane: which, end } => {
                if lane != 0 || self.lanes.len() < 2 {
                    return violation(format!(
                        "lane-end {which} {}",
                        if lane != 0 {
                            format!("from lane {lane}")
                        } else {
                            "without lanes side by side".into()
                        }
                    ));
                }
                match self.lanes.get_mut(which) {
                    None => violation(format!("lane-end {which}: no such lane")),
                    Some(l) if l.end.is_some() => violation(format!("lane-end {which} repeated")),
                    Some(l) => {
                        l.end = Some(end);
                        Effect::LaneEnded { lane: which, end }
                    }
                }
            }
            Event::Malformed { reason, excerpt } => {
                violation(format!("not an event ({reason}): \"{excerpt}\""))
            }
        }
    }

    /// `step`'s number in run order, from 1.
    fn number(&self, step: Step) -> usize {
        self.order
            .iter()
            .position(|s| *s == step)
            .map_or(0, |i| i + 1)
    }

    /// Why `step` does not fit lane `lane` now (it is neither running nor next there).
    fn misfit(&self, lane: usize, step: Step) -> String {
        let l = &self.lanes[lane];
        if !self.order.contains(&step) {
            format!("names a step that is not planned to run ({})", self.plan())
        } else if !l.planned.contains(&step) {
            format!(
                "names a step of another lane (lane {lane} runs {})",
                names(&l.planned)
            )
        } else if self.is_finished(step) {
            "names a step that already finished".into()
        } else {
            match l.unfinished() {
                Some(next) => format!("out of order: {next} is next"),
                None => "after every step finished".into(),
            }
        }
    }

    fn plan(&self) -> String {
        names(&self.order)
    }

    /// Whether `step` finished.
    pub fn is_finished(&self, step: Step) -> bool {
        self.lanes
            .iter()
            .any(|l| l.planned[..l.finished].contains(&step))
    }

    /// The steps that began and have not finished, in run order.
    pub fn running(&self) -> Vec<Step> {
        let mut running: Vec<Step> = self.lanes.iter().filter_map(Lane::running).collect();
        running.sort();
        running
    }

    /// The step of lane `lane` that began last (running or finished): that lane's output
    /// belongs to it.
    pub fn latest(&self, lane: usize) -> Option<Step> {
        self.lanes.get(lane).and_then(Lane::latest)
    }

    /// The steps that finished, in run order.
    pub fn finished(&self) -> Vec<Step> {
        let mut done: Vec<Step> = self
            .lanes
            .iter()
            .flat_map(|l| l.planned[..l.finished].iter().copied())
            .collect();
        done.sort();
        done
    }

    pub fn all_finished(&self) -> bool {
        self.lanes.iter().all(|l| l.finished == l.planned.len())
    }

    /// The first planned step of lane `lane` that has not finished.
    pub fn unfinished(&self, lane: usize) -> Option<Step> {
        self.lanes.get(lane).and_then(Lane::unfinished)
    }

    /// How the driver said lane `lane` ended, if it did.
    pub fn lane_end(&self, lane: usize) -> Option<LaneEnd> {
        self.lanes.get(lane).and_then(|l| l.end)
    }

    /// The migrations on disk as listed during migrate.
    pub fn migrations(&self) -> Option<&[String]> {
        self.migrations.as_deref()
    }

    pub fn into_migrations(self) -> Option<Vec<String>> {
        self.migrations
    }
}

fn names(steps: &[Step]) -> String {
    if steps.is_empty() {
        "none".into()
    } else {
        steps
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A line as owned data: its text, or its head and the count of cut bytes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Whole(Vec<u8>),
        Cut(Vec<u8>, u64),
    }

    fn own(line: Line<'_>) -> Owned {
        match line {
            Line::Whole(b) => Owned::Whole(b.to_vec()),
            Line::Cut { head, cut } => Owned::Cut(head.to_vec(), cut),
        }
    }

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<Owned> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            s.feed(chunk, |l| out.push(own(l)));
            assert!(s.buffered() <= max);
        }
        s.finish(|l| out.push(own(l)));
        out
    }

    fn whole(s: &str) -> Owned {
        Owned::Whole(s.as_bytes().to_vec())
    }

    #[test]
    fn splitter_cuts_lines_at_newlines_and_long_lines_at_the_limit() {
        struct Case {
            name: &'static str,
            max: usize,
            chunks: &'static [&'static [u8]],
            want: Vec<Owned>,
        }
        let cases = [
            Case {
                name: "two lines in one chunk",
                max: 8,
                chunks: &[b"a\nb\n"],
                want: vec![whole("a"), whole("b")],
            },
            Case {
                name: "a line across chunks",
                max: 8,
                chunks: &[b"ab", b"c\nd", b"e\n"],
                want: vec![whole("abc"), whole("de")],
            },
            Case {
                name: "empty lines are lines",
                max: 8,
                chunks: &[b"\n\n"],
                want: vec![whole(""), whole("")],
            },
            Case {
                name: "an unterminated last line comes at the end",
                max: 8,
                chunks: &[b"a\nlast"],
                want: vec![whole("a"), whole("last")],
            },
            Case {
                name: "a line of exactly the limit is whole",
                max: 4,
                chunks: &[b"abcd\n"],
                want: vec![whole("abcd")],
            },
            Case {
                name: "a longer line keeps its head and counts the rest",
                max: 4,
                chunks: &[b"abcdefg\nxy\n"],
                want: vec![Owned::Cut(b"abcd".to_vec(), 3), whole("xy")],
            },
            Case {
                name: "a long line across chunks is cut once",
                max: 4,
                chunks: &[b"abc", b"def", b"g", b"\nh\n"],
                want: vec![Owned::Cut(b"abcd".to_vec(), 3), whole("h")],
            },
            Case {
                name: "an unterminated long line is cut at the end",
                max: 2,
                chunks: &[b"abcdef"],
                want: vec![Owned::Cut(b"ab".to_vec(), 4)],
            },
            Case {
                name: "nothing fed gives no line",
                max: 4,
                chunks: &[],
                want: vec![],
            },
        ];
        for case in cases {
            assert_eq!(split(case.max, case.chunks), case.want, "{}", case.name);
        }
    }

    #[test]
    fn a_hundred_mebibytes_without_newline_stay_within_the_limit() {
        let mut s = LineSplitter::new(LOG_LINE_MAX);
        let chunk = vec![b'x'; 64 << 10];
        let mut lines = Vec::new();
        for _ in 0..1600 {
            s.feed(&chunk, |l| lines.push(own(l)));
            assert!(s.buffered() <= LOG_LINE_MAX);
        }
        s.feed(b"\nnext\n", |l| lines.push(own(l)));
        assert_eq!(lines.len(), 2);
        let cut = (1600u64 * (64 << 10)) - LOG_LINE_MAX as u64;
        assert_eq!(lines[0], Owned::Cut(vec![b'x'; LOG_LINE_MAX], cut));
        assert_eq!(lines[1], whole("next"));
        assert!(s.buf.capacity() <= 2 * LOG_LINE_MAX);
    }

    #[test]
    fn line_text_trims_and_notes_what_was_cut() {
        let cases: [(&str, Line<'_>, &str); 5] = [
            ("plain", Line::Whole(b"hello"), "hello"),
            ("carriage return", Line::Whole(b"50%\r"), "50%"),
            ("invalid UTF-8", Line::Whole(b"a\xffb"), "a\u{fffd}b"),
            (
                "cut",
                Line::Cut {
                    head: b"abcd",
                    cut: 10,
                },
                "abcd [... 10 bytes cut]",
            ),
            (
                "a character split by the cut counts as cut",
                Line::Cut {
                    head: b"ab\xc3",
                    cut: 1,
                },
                "ab [... 2 bytes cut]",
            ),
        ];
        for (name, line, want) in cases {
            assert_eq!(line.to_text(), want, "{name}");
        }
    }

    fn bad(reason: &'static str, excerpt: &str) -> Event {
        Event::Malformed {
            reason,
            excerpt: excerpt.into(),
        }
    }

    #[test]
    fn event_lines_parse_into_events_and_anything_else_is_malformed() {
        let cases: Vec<(&str, &[u8], Event)> = vec![
            ("setup", b"setup-done 812", Event::SetupDone { ms: 812 }),
            (
                "begin",
                b"step-begin migrate",
                Event::StepBegin(Step::Migrate),
            ),
            (
                "done",
                b"step-done compilemessages 7",
                Event::StepDone {
                    step: Step::Compilemessages,
                    ms: 7,
                },
            ),
            (
                "migrations",
                b"migrations auth.0001_initial poll.0002_demo_delay",
                Event::Migrations(vec![
                    "auth.0001_initial".into(),
                    "poll.0002_demo_delay".into(),
                ]),
            ),
            ("no migrations", b"migrations", Event::Migrations(vec![])),
            ("empty line", b"", bad("unknown event", "")),
            (
                "unknown",
                b"step-skip migrate",
                bad("unknown event", "step-skip migrate"),
            ),
            (
                "old marker",
                b"\x1ebitpoll-launcher step-done migrate 1",
                bad(
                    "unknown event",
                    "\\u{1e}bitpoll-launcher step-done migrate 1",
                ),
            ),
            (
                "unknown step",
                b"step-begin makemigrations",
                bad("bad arguments", "step-begin makemigrations"),
            ),
            (
                "missing ms",
                b"step-done migrate",
                bad("bad arguments", "step-done migrate"),
            ),
            (
                "signed ms",
                b"setup-done +5",
                bad("bad arguments", "setup-done +5"),
            ),
            (
                "ms overflow",
                b"setup-done 99999999999999999999999",
                bad("bad arguments", "setup-done 99999999999999999999999"),
            ),
            (
                "extra word",
                b"step-begin migrate now",
                bad("bad arguments", "step-begin migrate now"),
            ),
            (
                "double space",
                b"step-begin  migrate",
                bad("bad arguments", "step-begin  migrate"),
            ),
            (
                "carriage return",
                b"step-begin migrate\r",
                bad("bad arguments", "step-begin migrate\\r"),
            ),
            (
                "trailing space",
                b"migrations ",
                bad("bad arguments", "migrations "),
            ),
            (
                "name without app",
                b"migrations 0001_initial",
                bad("bad arguments", "migrations 0001_initial"),
            ),
            (
                "empty app",
                b"migrations .0001",
                bad("bad arguments", "migrations .0001"),
            ),
            (
                "control character",
                b"migrations a.b\x07",
                bad("bad arguments", "migrations a.b\\u{7}"),
            ),
            (
                "not UTF-8",
                b"step-begin \xff",
                bad("not UTF-8", "step-begin \u{fffd}"),
            ),
        ];
        for (name, line, want) in cases {
            assert_eq!(parse_line(Line::Whole(line)), want, "{name}");
        }
    }

    #[test]
    fn a_malformed_line_is_shown_escaped_and_shortened() {
        let long = [b'a'; 500];
        let Event::Malformed { excerpt, .. } = parse_line(Line::Whole(&long)) else {
            panic!("not malformed");
        };
        assert_eq!(excerpt, format!("{}...", "a".repeat(EXCERPT_MAX)));
    }

    #[test]
    fn an_overlong_event_line_is_dropped_to_its_newline_and_reported_once() {
        let mut p = Parser::new();
        let mut events = Vec::new();
        events.extend(p.feed(b"setup-done 1\nmigrations a."));
        let chunk = vec![b'x'; 256 << 10];
        for _ in 0..8 {
            events.extend(p.feed(&chunk));
            assert!(p.buffered() <= EVENT_LINE_MAX);
        }
        events.extend(p.feed(b"x\nstep-begin migrate\n"));
        events.extend(p.finish());
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0], Event::SetupDone { ms: 1 });
        assert!(
            matches!(&events[1], Event::Malformed { reason: "line longer than the limit", excerpt } if excerpt.starts_with("migrations a.xxx") && excerpt.len() < 200),
            "{:?}",
            events[1]
        );
        assert_eq!(events[2], Event::StepBegin(Step::Migrate));
    }

    #[test]
    fn an_unterminated_last_event_is_malformed_not_acted_on() {
        let mut p = Parser::new();
        assert_eq!(p.feed(b"step-done migrate 12"), vec![]);
        assert_eq!(
            p.finish(),
            vec![bad(
                "unterminated line at the end of the stream",
                "step-done migrate 12"
            )]
        );
    }

    use Step::{Collectstatic as C, Compilemessages as M, Migrate as G};

    fn begin(step: Step) -> Event {
        Event::StepBegin(step)
    }

    fn done(step: Step) -> Event {
        Event::StepDone { step, ms: 1 }
    }

    fn setup() -> Event {
        Event::SetupDone { ms: 1 }
    }

    fn migrations() -> Event {
        Event::Migrations(vec!["poll.0001_initial".into()])
    }

    #[test]
    fn only_a_planned_steps_own_step_done_in_its_turn_finishes_it() {
        struct Case {
            name: &'static str,
            planned: &'static [Step],
            events: Vec<Event>,
            finished: &'static [Step],
            violations: usize,
        }
        let cases = [
            Case {
                name: "a normal run",
                planned: &[G, C, M],
                events: vec![
                    setup(),
                    begin(G),
                    migrations(),
                    done(G),
                    begin(C),
                    done(C),
                    begin(M),
                    done(M),
                ],
                finished: &[G, C, M],
                violations: 0,
            },
            Case {
                name: "the driver died during the second step",
                planned: &[G, C],
                events: vec![setup(), begin(G), done(G), begin(C)],
                finished: &[G],
                violations: 0,
            },
            Case {
                name: "step-done of the next step while one runs",
                planned: &[G, C],
                events: vec![setup(), begin(G), done(C), done(G)],
                finished: &[G],
                violations: 1,
            },
            Case {
                name: "step-done of a step that is not planned",
                planned: &[C],
                events: vec![setup(), begin(C), done(G), done(M)],
                finished: &[],
                violations: 2,
            },
            Case {
                name: "step-done without step-begin",
                planned: &[G, C],
                events: vec![setup(), done(G), begin(G), done(G), done(C)],
                finished: &[G],
                violations: 2,
            },
            Case {
                name: "a step finished twice",
                planned: &[G, C],
                events: vec![
                    setup(),
                    begin(G),
                    done(G),
                    done(G),
                    begin(C),
                    done(G),
                    done(C),
                ],
                finished: &[G, C],
                violations: 2,
            },
            Case {
                name: "a step begun twice",
                planned: &[G],
                events: vec![setup(), begin(G), begin(G), done(G), begin(G)],
                finished: &[G],
                violations: 2,
            },
            Case {
                name: "steps out of order",
                planned: &[G, C, M],
                events: vec![setup(), begin(C), done(C), begin(M), done(M)],
                finished: &[],
                violations: 4,
            },
            Case {
                name: "a step before Django started",
                planned: &[C],
                events: vec![begin(C), done(C), setup(), setup()],
                finished: &[],
                violations: 3,
            },
            Case {
                name: "nothing planned",
                planned: &[],
                events: vec![setup(), begin(G), done(G)],
                finished: &[],
                violations: 2,
            },
            Case {
                name: "migrations outside migrate or twice",
                planned: &[G, C],
                events: vec![
                    setup(),
                    migrations(),
                    begin(G),
                    migrations(),
                    migrations(),
                    done(G),
                    begin(C),
                    migrations(),
                    done(C),
                ],
                finished: &[G, C],
                violations: 3,
            },
            Case {
                name: "malformed lines change nothing",
                planned: &[G],
                events: vec![
                    setup(),
                    begin(G),
                    bad("unknown event", "step-done"),
                    done(G),
                ],
                finished: &[G],
                violations: 1,
            },
        ];
        for case in cases {
            let mut p = Progress::new(case.planned);
            let mut violations = 0;
            let mut stamped = Vec::new();
            for event in case.events {
                match p.apply(event) {
                    Effect::Violation(_) => violations += 1,
                    Effect::Finished { step, .. } => stamped.push(step),
                    _ => {}
                }
            }
            assert_eq!(p.finished(), case.finished, "{}", case.name);
            assert_eq!(stamped, case.finished, "{}", case.name);
            assert_eq!(violations, case.violations, "{}", case.name);
            assert_eq!(
                p.all_finished(),
                case.finished == case.planned,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn violations_say_what_was_wrong() {
        let mut p = Progress::new(&[G, C]);
        let mut say = |e| match p.apply(e) {
            Effect::Violation(text) => text,
            other => panic!("not a violation: {other:?}"),
        };
        assert_eq!(say(begin(G)), "step-begin migrate before setup-done");
        let mut p = Progress::new(&[G, C]);
        p.apply(setup());
        p.apply(begin(G));
        let mut say = |e| match p.apply(e) {
            Effect::Violation(text) => text,
            other => panic!("not a violation: {other:?}"),
        };
        assert_eq!(say(done(C)), "step-done collectstatic while migrate runs");
        assert_eq!(
            say(done(M)),
            "step-done compilemessages names a step that is not planned to run (migrate, collectstatic)"
        );
        assert_eq!(
            say(begin(C)),
            "step-begin collectstatic while migrate has not finished"
        );
        assert_eq!(
            say(bad("unknown event", "hello")),
            "not an event (unknown event): \"hello\""
        );
    }

    #[test]
    fn the_running_and_latest_step_follow_the_events() {
        let mut p = Progress::new(&[G, C]);
        assert_eq!(
            (p.running(), p.latest(0), p.unfinished(0)),
            (vec![], None, Some(G))
        );
        p.apply(setup());
        p.apply(begin(G));
        assert_eq!((p.running(), p.latest(0)), (vec![G], Some(G)));
        p.apply(migrations());
        p.apply(done(G));
        assert_eq!(
            (p.running(), p.latest(0), p.unfinished(0)),
            (vec![], Some(G), Some(C))
        );
        p.apply(begin(C));
        p.apply(done(C));
        assert_eq!(
            (p.running(), p.latest(0), p.unfinished(0)),
            (vec![], Some(C), None)
        );
        assert_eq!(
            p.into_migrations(),
            Some(vec!["poll.0001_initial".to_string()])
        );
    }

    #[test]
    fn migrate_runs_beside_the_steps_that_do_not_need_the_database() {
        let cases: [(&[Step], Vec<Vec<Step>>); 6] = [
            (&[G, C, M], vec![vec![G], vec![C, M]]),
            (&[G, M], vec![vec![G], vec![M]]),
            (&[G, C], vec![vec![G], vec![C]]),
            (&[G], vec![vec![G]]),
            (&[C, M], vec![vec![C, M]]),
            (&[], vec![vec![]]),
        ];
        for (steps, want) in cases {
            assert_eq!(lanes(steps), want, "{steps:?}");
        }
        assert_eq!(lane_fds(1), [4, 5, 6]);
        assert_eq!(lane_fds(2), [7, 8, 9]);
    }

    #[test]
    fn lane_end_events_parse() {
        let cases: Vec<(&[u8], Event)> = vec![
            (
                b"lane-end 1 exit 3",
                Event::LaneEnd {
                    lane: 1,
                    end: LaneEnd::Exit(3),
                },
            ),
            (
                b"lane-end 0 signal 9",
                Event::LaneEnd {
                    lane: 0,
                    end: LaneEnd::Signal(9),
                },
            ),
            (
                b"lane-end 0 stopped",
                Event::LaneEnd {
                    lane: 0,
                    end: LaneEnd::Stopped,
                },
            ),
            (b"lane-end 0", bad("bad arguments", "lane-end 0")),
            (
                b"lane-end x exit 1",
                bad("bad arguments", "lane-end x exit 1"),
            ),
            (b"lane-end 1 exit", bad("bad arguments", "lane-end 1 exit")),
            (
                b"lane-end 1 exit 99999999999",
                bad("bad arguments", "lane-end 1 exit 99999999999"),
            ),
            (
                b"lane-end 1 stopped now",
                bad("bad arguments", "lane-end 1 stopped now"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_line(Line::Whole(line)),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    fn lane_end(lane: usize, end: LaneEnd) -> Event {
        Event::LaneEnd { lane, end }
    }

    #[test]
    fn lanes_side_by_side_finish_their_own_steps_only() {
        let plan = [vec![G], vec![C, M]];
        let mut p = Progress::with_lanes(&plan);
        assert_eq!(p.lane_count(), 2);
        assert_eq!(p.apply_from(0, setup()), Effect::SetupDone { ms: 1 });
        // Lane 1 begins before lane 0 (its pipe was read first): fine.
        assert_eq!(
            p.apply_from(1, begin(C)),
            Effect::Began {
                step: C,
                number: 2,
                of: 3
            }
        );
        assert_eq!(
            p.apply_from(0, begin(G)),
            Effect::Began {
                step: G,
                number: 1,
                of: 3
            }
        );
        assert_eq!(p.running(), vec![G, C]);
        // A lane's events finish nothing of another lane.
        assert!(
            matches!(p.apply_from(1, done(G)), Effect::Violation(t) if t == "step-done migrate names a step of another lane (lane 1 runs collectstatic, compilemessages)")
        );
        assert!(matches!(p.apply_from(0, done(C)), Effect::Violation(_)));
        assert!(
            matches!(p.apply_from(1, migrations()), Effect::Violation(t) if t == "migrations listed outside the migrate step")
        );
        assert!(matches!(p.apply_from(1, setup()), Effect::Violation(_)));
        assert!(matches!(p.apply_from(2, begin(M)), Effect::Violation(_)));
        assert_eq!(
            p.apply_from(1, done(C)),
            Effect::Finished { step: C, ms: 1 }
        );
        assert_eq!(
            (p.latest(0), p.latest(1), p.unfinished(1)),
            (Some(G), Some(C), Some(M))
        );
        assert_eq!(
            p.apply_from(0, migrations()),
            Effect::Migrations { count: 1 }
        );
        assert_eq!(
            p.apply_from(1, begin(M)),
            Effect::Began {
                step: M,
                number: 3,
                of: 3
            }
        );
        assert_eq!(p.running(), vec![G, M]);
        assert_eq!(
            p.apply_from(1, done(M)),
            Effect::Finished { step: M, ms: 1 }
        );
        assert!(!p.all_finished());
        assert_eq!(p.finished(), vec![C, M]);
        assert_eq!(
            p.apply_from(0, done(G)),
            Effect::Finished { step: G, ms: 1 }
        );
        assert!(p.all_finished() && p.is_finished(G));
        // The driver's report of the ends: on its own pipe, once per lane.
        assert!(matches!(
            p.apply_from(1, lane_end(1, LaneEnd::Exit(0))),
            Effect::Violation(_)
        ));
        assert_eq!(
            p.apply_from(0, lane_end(1, LaneEnd::Exit(0))),
            Effect::LaneEnded {
                lane: 1,
                end: LaneEnd::Exit(0)
            }
        );
        assert!(
            matches!(p.apply_from(0, lane_end(1, LaneEnd::Exit(0))), Effect::Violation(t) if t == "lane-end 1 repeated")
        );
        assert!(matches!(
            p.apply_from(0, lane_end(2, LaneEnd::Stopped)),
            Effect::Violation(_)
        ));
        assert_eq!(p.lane_end(1), Some(LaneEnd::Exit(0)));
        assert_eq!(p.lane_end(0), None);
    }

    #[test]
    fn lane_zero_waits_for_setup_and_one_lane_takes_no_lane_end() {
        let mut p = Progress::with_lanes(&[vec![G], vec![C]]);
        assert!(
            matches!(p.apply_from(0, begin(G)), Effect::Violation(t) if t == "step-begin migrate before setup-done")
        );
        let mut p = Progress::new(&[G, C]);
        assert!(matches!(
            p.apply(lane_end(0, LaneEnd::Exit(0))),
            Effect::Violation(t) if t == "lane-end 0 without lanes side by side"
        ));
    }

    /// Lines that are events, almost events, or noise.
    fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"setup-done 3\n".to_vec()),
            Just(b"step-begin migrate\n".to_vec()),
            Just(b"step-done migrate 9\n".to_vec()),
            Just(b"step-begin collectstatic\n".to_vec()),
            Just(b"step-done collectstatic 9\n".to_vec()),
            Just(b"migrations a.b c.d\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(prop_oneof![Just(b'x'), Just(b'\n'), Just(b' ')], 0..64),
        ]
    }

    fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(line_strategy(), 0..24).prop_map(|lines| lines.concat())
    }

    /// `bytes` cut at the given (sorted, deduplicated) offsets.
    fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut offsets: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        offsets.sort_unstable();
        offsets.dedup();
        let mut out = Vec::new();
        let mut at = 0;
        for o in offsets.into_iter().chain([bytes.len()]) {
            out.push(bytes[at..o].to_vec());
            at = o;
        }
        out
    }

    fn parse_all(max: usize, chunks: &[Vec<u8>]) -> Vec<Event> {
        let mut p = Parser::with_line_max(max);
        let mut events = Vec::new();
        for c in chunks {
            events.extend(p.feed(c));
            assert!(p.buffered() <= max);
        }
        events.extend(p.finish());
        events
    }

    proptest! {
        #[test]
        fn the_splitter_is_bounded_and_chunking_does_not_change_its_lines(
            bytes in stream_strategy(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
            max in 0usize..40,
        ) {
            let pieces = chunks(&bytes, &cuts);
            let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            let chunked = split(max, &refs);
            prop_assert_eq!(&chunked, &split(max, &[&bytes]));
            // Every input line is accounted for: its kept bytes plus its cut bytes.
            let mut want: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
            if bytes.last().is_none_or(|&b| b == b'\n') {
                want.pop();
            }
            prop_assert_eq!(chunked.len(), want.len());
            for (got, line) in chunked.iter().zip(want) {
                match got {
                    Owned::Whole(b) => prop_assert_eq!(b.as_slice(), line),
                    Owned::Cut(head, cut) => {
                        prop_assert_eq!(head.len(), max);
                        prop_assert_eq!(head.as_slice(), &line[..max]);
                        prop_assert_eq!(head.len() as u64 + cut, line.len() as u64);
                    }
                }
            }
        }

        #[test]
        fn the_parser_never_panics_and_chunking_does_not_change_its_events(
            bytes in stream_strategy(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
            max in prop_oneof![Just(EVENT_LINE_MAX), 0usize..40],
        ) {
            let events = parse_all(max, &chunks(&bytes, &cuts));
            prop_assert_eq!(&events, &parse_all(max, std::slice::from_ref(&bytes)));
            for e in &events {
                if let Event::Malformed { excerpt, .. } = e {
                    prop_assert!(excerpt.len() <= EXCERPT_MAX * 10 + 3);
                }
            }
        }

        #[test]
        fn in_lanes_each_lane_finishes_a_prefix_of_its_plan_and_only_on_its_own_step_done(
            planned in prop::sample::subsequence(Step::ALL.to_vec(), 0..=3),
            events in prop::collection::vec((0usize..3, prop_oneof![
                Just(setup()),
                prop::sample::select(Step::ALL.to_vec()).prop_map(begin),
                prop::sample::select(Step::ALL.to_vec()).prop_map(done),
                Just(migrations()),
                (0usize..3).prop_map(|l| lane_end(l, LaneEnd::Exit(0))),
            ]), 0..32),
        ) {
            let plan = lanes(&planned);
            let mut p = Progress::with_lanes(&plan);
            for (lane, e) in events {
                let before = p.finished();
                let done_in_lane = match &e {
                    Event::StepDone { step, .. } => plan.get(lane).is_some_and(|l| l.contains(step)),
                    _ => false,
                };
                let effect = p.apply_from(lane, e);
                let after = p.finished();
                let finished_now = matches!(effect, Effect::Finished { .. });
                prop_assert!(after == before || (after.len() == before.len() + 1 && done_in_lane && finished_now));
                for (i, l) in plan.iter().enumerate() {
                    let n = l.iter().filter(|s| p.is_finished(**s)).count();
                    prop_assert!(l[..n].iter().all(|s| p.is_finished(*s)), "lane {} finished out of order", i);
                }
            }
        }

        #[test]
        fn progress_finishes_a_prefix_of_the_plan_and_only_on_step_done(
            planned in prop::sample::subsequence(Step::ALL.to_vec(), 0..=3),
            events in prop::collection::vec(prop_oneof![
                Just(setup()),
                prop::sample::select(Step::ALL.to_vec()).prop_map(begin),
                prop::sample::select(Step::ALL.to_vec()).prop_map(done),
                Just(migrations()),
                Just(bad("unknown event", "x")),
            ], 0..24),
        ) {
            let mut p = Progress::new(&planned);
            for e in events {
                let before = p.finished().len();
                let is_done = matches!(e, Event::StepDone { .. });
                let effect = p.apply(e);
                let after = p.finished().len();
                let finished_now = matches!(effect, Effect::Finished { .. });
                prop_assert!(after == before || (after == before + 1 && is_done && finished_now));
                prop_assert_eq!(p.finished(), &planned[..after]);
            }
        }
    }
}
