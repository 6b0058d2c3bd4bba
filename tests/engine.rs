//! The engine's promises, with a backend that sleeps per step instead of running a network:
//! latest wins per output, discrete changes cancel within one evaluation, drags keep finishing
//! short renders, failures and panics are isolated, bursts of jobs end with the last one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latent_studio::engine::{
    Backend, Engine, Event, EventKind, Finished, JobId, OutputKey, StepHook, Urgency, Work,
};

#[derive(Clone)]
struct Fake {
    output: OutputKey,
    tag: u8,
    steps: usize,
    step_time: Duration,
    panic: bool,
    fail: bool,
}

impl Work for Fake {
    fn output(&self) -> &OutputKey {
        &self.output
    }
}

struct SleepyBackend;

impl Backend for SleepyBackend {
    type Work = Fake;
    fn run(&mut self, work: &Fake, step: &mut StepHook<'_>) -> Result<Option<Finished>, String> {
        if work.panic {
            panic!("boom");
        }
        if work.fail {
            return Err("the model file is corrupt".into());
        }
        for s in 1..=work.steps {
            std::thread::sleep(work.step_time);
            if step(s, work.steps, None).is_break() {
                return Ok(None);
            }
        }
        Ok(Some(Finished::Image {
            rgb: vec![work.tag],
            width: 1,
            height: 1,
            latent: None,
            unknown_words: vec![],
            notes: vec![],
            parameters: String::new(),
        }))
    }
}

/// The tag a fake render carries.
fn tag(result: &Finished) -> u8 {
    match result {
        Finished::Image { rgb, .. } => rgb[0],
        Finished::ModelLoaded { .. } => panic!("a fake job loaded a model"),
    }
}

fn job(output: &str, tag: u8, steps: usize, step_ms: u64) -> Fake {
    Fake {
        output: OutputKey(output.into()),
        tag,
        steps,
        step_time: Duration::from_millis(step_ms),
        panic: false,
        fail: false,
    }
}

fn engine() -> (Engine<Fake>, Arc<AtomicUsize>) {
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = wakes.clone();
    let engine = Engine::spawn(
        SleepyBackend,
        Arc::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        }),
    )
    .unwrap();
    (engine, wakes)
}

/// Receives events until `stop` says so, failing after `limit`.
fn collect(engine: &Engine<Fake>, limit: Duration, mut stop: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + limit;
    let mut events = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = engine.events().recv_timeout(left).expect("no event in time: deadlock?");
        let done = stop(&event);
        events.push(event);
        if done {
            return events;
        }
    }
}

fn is_terminal(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Done { .. } | EventKind::Failed { .. } | EventKind::Cancelled)
}

/// Per job: Started, Progress..., then exactly one terminal event, or only Cancelled; and for
/// each output no frame of an older job after a newer job started.
fn check_event_order(events: &[Event]) {
    let mut terminal: HashSet<JobId> = HashSet::new();
    let mut started: HashSet<JobId> = HashSet::new();
    let mut newest_started: HashMap<OutputKey, JobId> = HashMap::new();
    for e in events {
        assert!(!terminal.contains(&e.job), "event after the end of {:?}: {:?}", e.job, e.kind);
        match &e.kind {
            EventKind::Started => {
                let newest = newest_started.entry(e.output.clone()).or_insert(e.job);
                assert!(e.job >= *newest, "{:?} started after {:?}", e.job, newest);
                *newest = e.job;
                started.insert(e.job);
            }
            EventKind::Cancelled => {}
            _ => {
                assert!(started.contains(&e.job), "{:?} before it started", e.kind);
                assert_eq!(newest_started.get(&e.output), Some(&e.job), "a frame of a superseded job");
            }
        }
        if is_terminal(&e.kind) {
            terminal.insert(e.job);
        }
    }
}

#[test]
fn ten_thousand_jobs_in_bursts_end_with_the_last_and_keep_order() {
    let (engine, wakes) = engine();
    let engine = Arc::new(engine);
    let outputs = ["a", "b", "c"];
    let submitter = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let mut last = HashMap::new();
            for i in 0..10_000u32 {
                let out = outputs[(i % 3) as usize];
                let id = engine.submit(job(out, (i % 251) as u8, 2, 0), Urgency::Discrete);
                last.insert(out, (id, (i % 251) as u8));
                if i % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            last
        })
    };
    let mut finished_last: HashMap<OutputKey, u8> = HashMap::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !submitter.is_finished() {
        assert!(Instant::now() < deadline, "the submitter never finished: deadlock?");
        if let Ok(e) = engine.events().recv_timeout(Duration::from_millis(50)) {
            if let EventKind::Done { result, .. } = &e.kind {
                finished_last.insert(e.output.clone(), tag(result));
            }
            events.push(e);
        }
    }
    let last = submitter.join().unwrap();
    // Drain until each output's last job has ended.
    let mut pending: HashSet<JobId> = last.values().map(|(id, _)| *id).collect();
    for e in &events {
        if is_terminal(&e.kind) {
            pending.remove(&e.job);
        }
    }
    while !pending.is_empty() {
        let e = engine.events().recv_timeout(Duration::from_secs(30)).expect("the last jobs never ended");
        if let EventKind::Done { result, .. } = &e.kind {
            finished_last.insert(e.output.clone(), tag(result));
        }
        if is_terminal(&e.kind) {
            pending.remove(&e.job);
        }
        events.push(e);
    }
    for (out, (_, tag)) in &last {
        assert_eq!(
            finished_last.get(&OutputKey(out.to_string())),
            Some(tag),
            "output {out} ends with its last job"
        );
    }
    check_event_order(&events);
    // Every job ended exactly once (done, cancelled while running, or dropped while waiting).
    let ends = events.iter().filter(|e| is_terminal(&e.kind)).count();
    assert_eq!(ends, 10_000);
    assert!(wakes.load(Ordering::Relaxed) >= events.len());
}

#[test]
fn a_panicking_or_failing_job_is_reported_and_the_next_one_succeeds() {
    let (engine, _) = engine();
    let mut bad = job("a", 1, 1, 0);
    bad.panic = true;
    engine.submit(bad, Urgency::Discrete);
    let events = collect(&engine, Duration::from_secs(10), |e| is_terminal(&e.kind));
    let EventKind::Failed { error } = &events.last().unwrap().kind else { panic!("{:?}", events) };
    assert!(error.contains("panicked") && error.contains("boom"), "{error}");
    let mut failing = job("a", 2, 1, 0);
    failing.fail = true;
    engine.submit(failing, Urgency::Discrete);
    let events = collect(&engine, Duration::from_secs(10), |e| is_terminal(&e.kind));
    assert!(matches!(&events.last().unwrap().kind, EventKind::Failed { error } if error.contains("corrupt")));
    engine.submit(job("a", 3, 2, 0), Urgency::Discrete);
    let events = collect(&engine, Duration::from_secs(10), |e| is_terminal(&e.kind));
    assert!(matches!(&events.last().unwrap().kind, EventKind::Done { result, .. } if tag(result) == 3));
}

#[test]
fn a_discrete_change_cancels_the_running_job_within_one_evaluation() {
    let (engine, _) = engine();
    let a = engine.submit(job("a", 1, 50, 20), Urgency::Discrete);
    let events =
        collect(&engine, Duration::from_secs(10), |e| matches!(e.kind, EventKind::Progress { step: 2, .. }));
    assert_eq!(events.last().unwrap().job, a);
    let b = engine.submit(job("a", 2, 3, 1), Urgency::Discrete);
    let events = collect(&engine, Duration::from_secs(10), |e| e.job == b && is_terminal(&e.kind));
    let a_steps: Vec<usize> = events
        .iter()
        .filter(|e| e.job == a)
        .filter_map(|e| match e.kind {
            EventKind::Progress { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    // The step running when B arrived may finish; no further step runs.
    assert!(a_steps.len() <= 1, "A ran on: {a_steps:?}");
    assert!(events.iter().any(|e| e.job == a && matches!(e.kind, EventKind::Cancelled)));
    assert!(matches!(&events.last().unwrap().kind, EventKind::Done { result, .. } if tag(result) == 2));
}

#[test]
fn cancel_stops_the_running_job() {
    let (engine, _) = engine();
    let a = engine.submit(job("a", 1, 100, 10), Urgency::Discrete);
    collect(&engine, Duration::from_secs(10), |e| matches!(e.kind, EventKind::Progress { .. }));
    engine.cancel(OutputKey("a".into()));
    let events = collect(&engine, Duration::from_secs(10), |e| is_terminal(&e.kind));
    let last = events.last().unwrap();
    assert_eq!((last.job, matches!(last.kind, EventKind::Cancelled)), (a, true));
    assert!(events.len() <= 3, "{} more steps after the cancel", events.len() - 1);
}

#[test]
fn during_a_drag_short_renders_finish_and_start_from_the_newest_value() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    let submitter = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            let start = Instant::now();
            let mut tag = 0u8;
            while start.elapsed() < Duration::from_millis(1500) {
                tag = tag.wrapping_add(1);
                ids.push(engine.submit(job("a", tag, 5, 10), Urgency::Drag));
                std::thread::sleep(Duration::from_millis(16));
            }
            (ids, tag)
        })
    };
    let mut events = Vec::new();
    while !submitter.is_finished() {
        if let Ok(e) = engine.events().recv_timeout(Duration::from_millis(50)) {
            events.push(e);
        }
    }
    let (ids, last_tag) = submitter.join().unwrap();
    let last = *ids.last().unwrap();
    events.extend(collect(&engine, Duration::from_secs(10), |e| e.job == last && is_terminal(&e.kind)));
    check_event_order(&events);
    let done: Vec<&Event> = events.iter().filter(|e| matches!(e.kind, EventKind::Done { .. })).collect();
    let cancelled_running = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Cancelled))
        .filter(|e| events.iter().any(|s| s.job == e.job && matches!(s.kind, EventKind::Started)))
        .count();
    // A 50 ms render is never cancelled by a drag; about one finishes per render time.
    assert_eq!(cancelled_running, 0);
    assert!(done.len() >= 15, "only {} renders finished during 1.5 s of dragging", done.len());
    // A started job was the newest waiting one: every job between two started ones was dropped
    // without running.
    let started: Vec<JobId> =
        events.iter().filter(|e| matches!(e.kind, EventKind::Started)).map(|e| e.job).collect();
    for pair in started.windows(2) {
        for id in ids.iter().filter(|id| **id > pair[0] && **id < pair[1]) {
            assert!(events.iter().any(|e| e.job == *id && matches!(e.kind, EventKind::Cancelled)));
        }
    }
    assert!(matches!(&done.last().unwrap().kind, EventKind::Done { result, .. } if tag(result) == last_tag));
}

#[test]
fn a_long_job_is_cancelled_at_once_during_a_drag() {
    let (engine, _) = engine();
    let a = engine.submit(job("a", 1, 100, 30), Urgency::Drag);
    collect(&engine, Duration::from_secs(10), |e| matches!(e.kind, EventKind::Progress { step: 2, .. }));
    let b = engine.submit(job("a", 2, 2, 1), Urgency::Drag);
    let events = collect(&engine, Duration::from_secs(10), |e| e.job == b && is_terminal(&e.kind));
    let a_progress =
        events.iter().filter(|e| e.job == a && matches!(e.kind, EventKind::Progress { .. })).count();
    assert!(a_progress <= 1, "the 3 s job ran {a_progress} more steps");
}

#[test]
fn dropping_the_engine_while_a_job_runs_stops_its_thread_within_a_step() {
    let (engine, _) = engine();
    engine.submit(job("a", 1, 1000, 5), Urgency::Discrete);
    // Wait for the job to start, then drop the handle mid-run.
    let start = Instant::now();
    while !matches!(
        engine.events().recv_timeout(Duration::from_secs(5)),
        Ok(Event { kind: EventKind::Progress { .. }, .. })
    ) {
        assert!(start.elapsed() < Duration::from_secs(5), "the job never started");
    }
    let dropped = Instant::now();
    drop(engine);
    assert!(dropped.elapsed() < Duration::from_secs(2), "drop took {:?}", dropped.elapsed());
}
