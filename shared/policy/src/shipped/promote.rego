# The promote gate: asked before each canary step and before promotion, on
# the last analysis window's numbers. Thresholds live in `data.promote`; an
# app's own `[rollout] max_error_rate` / `max_p99_ms` arrive as
# `input.overrides` and win.
#
# input: action, app, deployment, step, weight, window_s, overrides,
# canary { requests, errors, error_rate, p50_ms, p99_ms }, stable { … }.
# (Rule names differ from the data's keys: `data.promote.<key>` is both.)
# Too few canary requests never reach this policy: Bifrost reports such a
# window as inconclusive instead of asking.
package promote

import rego.v1

default allow := false

allow if count(deny) == 0

error_rate_limit := input.overrides.max_error_rate if {
	is_number(input.overrides.max_error_rate)
} else := data.promote.max_error_rate

p99_limit := input.overrides.max_p99_ms if {
	is_number(input.overrides.max_p99_ms)
} else := data.promote.max_p99_ms

deny contains msg if {
	input.canary.error_rate > error_rate_limit
	msg := sprintf(
		"Error rate %v%% exceeds maximum %v%%",
		[round(input.canary.error_rate * 1000) / 10, round(error_rate_limit * 1000) / 10],
	)
}

deny contains msg if {
	input.canary.p99_ms > p99_limit
	msg := sprintf("P99 latency %vms exceeds maximum %vms", [round(input.canary.p99_ms), p99_limit])
}
