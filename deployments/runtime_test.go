package deployments

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// sysmonGODEBUG is the Go runtime setting every deployment gives egressd:
// schedtrace keeps the runtime's sysmon thread out of deep sleep (less CPU
// per new connection; README, "Runtime settings for a farm"), at the
// largest period the runtime accepts, so its trace line is printed once per
// ~24.9 days. scripts/bench.sh reads it from the systemd unit.
const sysmonGODEBUG = "schedtrace=2147483647"

// TestRuntimeGODEBUG: the systemd unit, the container image and the
// Kubernetes Deployment set GODEBUG where operators set runtime knobs
// (Environment=, ENV, env), the same value in all three.
func TestRuntimeGODEBUG(t *testing.T) {
	u := parseUnit(t, "systemd/egressd.service")
	if env := u["Service"]["Environment"]; !slices.Contains(env, "GODEBUG="+sysmonGODEBUG) {
		t.Errorf("systemd/egressd.service: Environment=%q, want GODEBUG=%s among them", env, sysmonGODEBUG)
	}

	docker, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var final []string // the instructions of the last stage: the image that runs
	for _, line := range strings.Split(string(docker), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if strings.EqualFold(f[0], "FROM") {
			final = nil
		}
		final = append(final, strings.TrimSpace(line))
	}
	if !slices.Contains(final, "ENV GODEBUG="+sysmonGODEBUG) {
		t.Errorf("Dockerfile: the final stage has no ENV GODEBUG=%s:\n%s", sysmonGODEBUG, strings.Join(final, "\n"))
	}

	d := decodeObject[struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name string `yaml:"name"`
						Env  []struct {
							Name  string `yaml:"name"`
							Value string `yaml:"value"`
						} `yaml:"env"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}](t, k8sObjects(t), "Deployment/egressd")
	for _, c := range d.Spec.Template.Spec.Containers {
		var got []string
		for _, e := range c.Env {
			if e.Name == "GODEBUG" {
				got = append(got, e.Value)
			}
		}
		if len(got) != 1 || got[0] != sysmonGODEBUG {
			t.Errorf("kubernetes Deployment, container %s: GODEBUG %q, want exactly %q", c.Name, got, sysmonGODEBUG)
		}
	}
}
