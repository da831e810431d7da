//! How a request moves through the shop: arrival, a slot or the queue, its downstream calls, and
//! its span when it completes or is rejected.

use super::super::records::SimSpan;
use super::{Event, EventKind, Request, Sim, SpanSink};
use crate::random::SeededRng;

fn nonzero_bytes8(rng: &mut SeededRng) -> [u8; 8] {
    loop {
        let v = rng.next_u64();
        if v != 0 {
            return v.to_be_bytes();
        }
    }
}

fn nonzero_bytes16(rng: &mut SeededRng) -> [u8; 16] {
    loop {
        let hi = rng.next_u64();
        let lo = rng.next_u64();
        if hi != 0 || lo != 0 {
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&hi.to_be_bytes());
            out[8..].copy_from_slice(&lo.to_be_bytes());
            return out;
        }
    }
}

impl Sim {
    pub(super) fn process(&mut self, ev: Event, out: &mut SpanSink<'_>) {
        self.now = ev.time;
        match ev.kind {
            EventKind::RootArrival => {
                let now = self.now;
                let mut rate = self.traffic.rate_at(now);
                for &(start, end, factor) in &self.spikes {
                    if now >= start && now < end {
                        rate *= factor;
                    }
                }
                let accept = self.arrivals_rng.next_f64() * self.max_rate < rate;
                if accept {
                    let entry = self.pick_entry();
                    let trace_id = nonzero_bytes16(&mut self.ids_rng);
                    let req = self.new_request(trace_id, None, entry);
                    self.arrive(req, out);
                }
                self.schedule_next_arrival();
            }
            EventKind::CallArrival(req) => self.arrive(req, out),
            EventKind::LoseReplicas { service, count } => {
                let now = self.now;
                let s = &mut self.services[service];
                s.touch(now);
                let lost = count.min(s.ready);
                s.ready -= lost;
                // The controller replaces them: desired replicas do not change.
                let at = now.saturating_add(s.startup_ns);
                for _ in 0..lost {
                    self.services[service].pending_ready.push_back(at);
                    self.push_event(at, EventKind::ReplicaReady(service));
                }
            }
            EventKind::ServiceDone(req) => {
                let svc = self.requests[req].service;
                let s = &mut self.services[svc];
                s.touch(self.now);
                s.in_service = s.in_service.saturating_sub(1);
                self.proceed(req, out);
            }
            EventKind::ReplicaReady(svc) => {
                let now = self.now;
                let s = &mut self.services[svc];
                if s.pending_ready.front() == Some(&now) {
                    s.pending_ready.pop_front();
                    s.touch(now);
                    s.ready += 1;
                    self.dispatch(svc);
                }
            }
            EventKind::Scale { service, replicas } => self.apply_replicas(service, replicas),
        }
    }

    /// The entry service of a new external request: drawn by share when there are several.
    fn pick_entry(&mut self) -> usize {
        match self.entries.last() {
            Some(&(_, total)) => {
                let u = self.arrivals_rng.next_f64() * total;
                self.entries
                    .iter()
                    .find(|(_, upto)| u < *upto)
                    .map_or(self.root, |(i, _)| *i)
            }
            None => self.root,
        }
    }

    /// Sends a call from `req` to `target`: it arrives now, or after the network delay of the
    /// edge.
    fn send(&mut self, req: usize, target: usize, out: &mut SpanSink<'_>) {
        let now = self.now;
        let trace_id = self.requests[req].trace_id;
        let child = self.new_request(trace_id, Some(req), target);
        let from = self.requests[req].service;
        let delay: u64 = self
            .delays
            .iter()
            .filter(|d| d.0 == from && d.1 == target && now >= d.3 && now < d.4)
            .map(|d| d.2)
            .sum();
        if delay == 0 {
            self.arrive(child, out);
        } else {
            let at = now.saturating_add(delay);
            let r = &mut self.requests[child];
            r.arrival = at;
            r.started = at;
            self.push_event(at, EventKind::CallArrival(child));
        }
    }

    fn new_request(&mut self, trace_id: [u8; 16], parent: Option<usize>, service: usize) -> usize {
        let span_id = nonzero_bytes8(&mut self.ids_rng);
        let parent_span = parent.map(|p| self.requests[p].span_id);
        let r = Request {
            trace_id,
            span_id,
            parent_span,
            parent,
            service,
            arrival: self.now,
            started: self.now,
            replica: 0,
            error: false,
            rejected: false,
            next_call: 0,
            remaining: 0,
            pending: 0,
            sent: self.now,
        };
        if let Some(i) = self.free.pop() {
            self.requests[i] = r;
            i
        } else {
            self.requests.push(r);
            self.requests.len() - 1
        }
    }

    fn arrive(&mut self, req: usize, out: &mut SpanSink<'_>) {
        let svc = self.requests[req].service;
        let s = &mut self.services[svc];
        s.acc.arrivals += 1;
        if s.queue.is_empty() && u64::from(s.busy) < s.capacity_slots() {
            self.start(req);
        } else if s.queue.len() < s.queue_limit {
            s.queue.push_back(req);
        } else {
            s.acc.rejections += 1;
            self.reject(req, out);
        }
    }

    fn start(&mut self, req: usize) {
        let now = self.now;
        let svc = self.requests[req].service;
        self.requests[req].started = now;
        let r = &mut self.requests[req];
        r.replica = u32::from_le_bytes([r.span_id[0], r.span_id[1], r.span_id[2], r.span_id[3]])
            % self.services[r.service].ready.max(1);
        let s = &mut self.services[svc];
        s.touch(now);
        s.busy += 1;
        s.in_service += 1;
        let median = s.median_ns * s.slowdown_at(now);
        let base = s.rng.log_normal(median, s.sigma);
        let cores = s.cores();
        let over = (f64::from(s.in_service) - cores).max(0.0);
        let factor = if cores > 0.0 {
            1.0 + s.contention * over / cores
        } else {
            1.0
        };
        let done = now.saturating_add((base * factor) as u64);
        self.push_event(done, EventKind::ServiceDone(req));
    }

    pub(super) fn dispatch(&mut self, svc: usize) {
        loop {
            let s = &mut self.services[svc];
            if u64::from(s.busy) >= s.capacity_slots() {
                return;
            }
            match s.queue.pop_front() {
                Some(req) => self.start(req),
                None => return,
            }
        }
    }

    /// Moves a request past its own work: next downstream call or done.
    fn proceed(&mut self, req: usize, out: &mut SpanSink<'_>) {
        let svc = self.requests[req].service;
        loop {
            let r = &mut self.requests[req];
            if r.remaining > 0 {
                r.remaining -= 1;
                let call = r.next_call - 1;
                let target = self.services[svc].calls[call].target;
                self.send(req, target, out);
                return;
            }
            let s = &mut self.services[svc];
            match s.calls.get(r.next_call) {
                Some(c) if c.parallel => {
                    // The whole group at once: draw each call, then send every repetition.
                    let mut sends = Vec::new();
                    while let Some(c) = s.calls.get(r.next_call).filter(|c| c.parallel) {
                        r.next_call += 1;
                        if c.count > 0 && s.rng.next_f64() < c.probability {
                            sends.extend(std::iter::repeat_n(c.target, c.count as usize));
                        }
                    }
                    if sends.is_empty() {
                        continue;
                    }
                    r.pending = u32::try_from(sends.len()).unwrap_or(u32::MAX);
                    for target in sends {
                        self.send(req, target, out);
                    }
                    return;
                }
                Some(c) => {
                    r.next_call += 1;
                    if c.count > 0 && s.rng.next_f64() < c.probability {
                        r.remaining = c.count;
                    }
                }
                None => {
                    self.complete(req, out);
                    return;
                }
            }
        }
    }

    fn emit(&mut self, req: usize, out: &mut SpanSink<'_>) {
        let r = &self.requests[req];
        let span = SimSpan {
            trace_id: r.trace_id,
            span_id: r.span_id,
            parent_span_id: r.parent_span,
            caller: r
                .parent
                .and_then(|p| self.requests.get(p))
                .map(|p| self.names[p.service].as_str()),
            service: &self.names[r.service],
            operation: &self.operations[r.service],
            sent: r.sent,
            start: r.arrival,
            started: r.started,
            end: self.now,
            error: r.error,
            rejected: r.rejected,
            replica: r.replica,
            caller_replica: r
                .parent
                .and_then(|p| self.requests.get(p))
                .map_or(0, |p| p.replica),
        };
        out(&span);
        self.spans_emitted += 1;
    }

    /// Turns away a visit that found the queue full.
    fn reject(&mut self, req: usize, out: &mut SpanSink<'_>) {
        self.requests[req].error = true;
        self.requests[req].rejected = true;
        let parent = self.requests[req].parent;
        if parent.is_none() {
            self.root_failed += 1;
            self.root_outcomes.push(u64::MAX);
        }
        self.emit(req, out);
        self.free.push(req);
        if let Some(p) = parent {
            self.child_done(p, true, out);
        }
    }

    /// Ends an admitted visit, frees its slot and resumes its caller.
    fn complete(&mut self, req: usize, out: &mut SpanSink<'_>) {
        let now = self.now;
        let (svc, error, parent, latency) = {
            let r = &self.requests[req];
            (r.service, r.error, r.parent, now - r.arrival)
        };
        let s = &mut self.services[svc];
        s.busy = s.busy.saturating_sub(1);
        s.acc.completions += 1;
        if error {
            s.acc.errors += 1;
        }
        s.acc.latencies.push(latency);
        if parent.is_none() {
            if error {
                self.root_failed += 1;
                self.root_outcomes.push(u64::MAX);
            } else {
                self.root_ok += 1;
                self.root_outcomes.push(latency);
            }
        }
        self.emit(req, out);
        self.free.push(req);
        self.dispatch(svc);
        if let Some(p) = parent {
            self.child_done(p, error, out);
        }
    }

    /// A callee answered; a failure aborts the caller's remaining calls
    /// and fails it too, as an unhandled RPC error would.
    /// In a parallel group the caller waits for every call, then fails if one did.
    fn child_done(&mut self, parent: usize, error: bool, out: &mut SpanSink<'_>) {
        let p = &mut self.requests[parent];
        if p.pending > 0 {
            p.pending -= 1;
            p.error |= error;
            if p.pending > 0 {
                return;
            }
            if p.error {
                self.complete(parent, out);
            } else {
                self.proceed(parent, out);
            }
            return;
        }
        if error {
            self.requests[parent].error = true;
            self.complete(parent, out);
        } else {
            self.proceed(parent, out);
        }
    }
}
