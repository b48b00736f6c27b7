# The deploy gate: asked before a built deployment starts (built → deploying).
# Thresholds live in the data document (`data.deploy`), never here: changing
# a limit is a data change (`bifrost policies data deploy --set key=value`).
#
# input: action, app, deployment, actor, config (the deployment's deploy.toml
# snapshot), host { disk_free_gb, cpu_load (1-minute load per core),
# memory_available_mb }. A fact the host cannot tell is absent, and a rule
# about an absent fact does not fire.
package deploy

import rego.v1

default allow := false

allow if count(deny) == 0

deny contains msg if {
	input.host.disk_free_gb < data.deploy.min_disk_gb
	msg := sprintf("Disk free %vGB is below minimum %vGB", [input.host.disk_free_gb, data.deploy.min_disk_gb])
}

deny contains msg if {
	input.host.cpu_load > data.deploy.max_cpu_load
	msg := sprintf("CPU load %v per core exceeds maximum %v", [input.host.cpu_load, data.deploy.max_cpu_load])
}

deny contains msg if {
	input.host.memory_available_mb < data.deploy.min_memory_mb
	msg := sprintf(
		"Memory available %vMB is below minimum %vMB",
		[input.host.memory_available_mb, data.deploy.min_memory_mb],
	)
}
