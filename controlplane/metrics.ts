// The control plane's /metrics (served beside /healthz on the UI listener, ui/server.ts):
// how the process itself holds up under load — event-loop lag, memory, readers — and the
// counters GetStatus shows for the control plane.
import { monitorEventLoopDelay, type IntervalHistogram } from "node:perf_hooks";
import { Registry } from "../metrics/registry.js";
import type { GetStatusResponse } from "../proto/gen/bulkhead/v1/observer.js";

/**
 * Event-loop delay over consecutive windows: every scrape reads the last complete window,
 * so scrapers do not reset each other's figures (the current window until one completes).
 */
export class EventLoopLag {
  private readonly histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });
  private last: { p50: number; p99: number; max: number } | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly windowMs = 10_000) {}

  start(): void {
    this.histogram.enable();
    this.timer = setInterval(() => {
      this.last = this.read();
      this.histogram.reset();
    }, this.windowMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.histogram.disable();
  }

  /** Seconds. */
  quantiles(): { p50: number; p99: number; max: number } {
    return this.last ?? this.read();
  }

  private read(): { p50: number; p99: number; max: number } {
    const h = this.histogram;
    // An empty histogram reads as NaN and 9.2e18: no delay seen yet.
    if (h.count === 0) return { p50: 0, p99: 0, max: 0 };
    return { p50: h.percentile(50) / 1e9, p99: h.percentile(99) / 1e9, max: h.max / 1e9 };
  }
}

export interface ControlPlaneReadings {
  status: GetStatusResponse;
  lag: EventLoopLag;
  mapStreams: number;
  mapStreamsRefused: number;
}

export function renderMetrics(r: ControlPlaneReadings): string {
  const m = new Registry();
  const lag = r.lag.quantiles();
  const lagMetric = m.gauge("bulkhead_controlplane_event_loop_lag_seconds",
    `Event-loop delay over the last complete ${r.lag.windowMs / 1000} s window (perf_hooks monitorEventLoopDelay, 10 ms resolution), by quantile`);
  lagMetric.set({ quantile: "0.5" }, lag.p50);
  lagMetric.set({ quantile: "0.99" }, lag.p99);
  lagMetric.set({ quantile: "1" }, lag.max);
  const mem = process.memoryUsage();
  m.gauge("bulkhead_controlplane_resident_memory_bytes", "Resident set size of the control plane process").set({}, mem.rss);
  m.gauge("bulkhead_controlplane_heap_used_bytes", "V8 heap in use").set({}, mem.heapUsed);
  const s = r.status;
  m.counter("bulkhead_controlplane_records_total", "Flow records received from agents and stored").set({}, s.recordsTotal);
  m.gauge("bulkhead_controlplane_records_per_second", "Flow records received per second, over the last ten seconds").set({}, s.recordsPerSecond);
  m.gauge("bulkhead_controlplane_flows_stored", "Flow records in the in-memory history").set({}, s.flowsStored);
  m.gauge("bulkhead_controlplane_agents_connected", "Agents with an open stream").set({}, s.agentsConnected);
  m.gauge("bulkhead_controlplane_map_streams", "Open web UI map streams").set({}, r.mapStreams);
  m.counter("bulkhead_controlplane_map_streams_refused_total", "Web UI map streams refused for a full cap (per token or in total)").set({}, r.mapStreamsRefused);
  const lost = m.counter("bulkhead_controlplane_lost_total", "The control plane's own losses, by cause and unit (as GetStatus shows them for node \"controlplane\")");
  for (const l of s.losses) if (l.node === "controlplane") lost.set({ cause: l.cause, unit: l.unit }, l.count);
  return m.render();
}
