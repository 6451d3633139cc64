package deployments

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// The parts of the Kubernetes objects the tests look at.
type (
	k8sMeta struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	k8sProbe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"`
		} `yaml:"httpGet"`
		PeriodSeconds    int `yaml:"periodSeconds"`
		FailureThreshold int `yaml:"failureThreshold"`
	}
	k8sSecurity struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	}
	k8sContainer struct {
		Name  string   `yaml:"name"`
		Image string   `yaml:"image"`
		Args  []string `yaml:"args"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		ReadinessProbe  *k8sProbe   `yaml:"readinessProbe"`
		LivenessProbe   *k8sProbe   `yaml:"livenessProbe"`
		Lifecycle       *yaml.Node  `yaml:"lifecycle"`
		SecurityContext k8sSecurity `yaml:"securityContext"`
		VolumeMounts    []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			SubPath   string `yaml:"subPath"`
			ReadOnly  bool   `yaml:"readOnly"`
		} `yaml:"volumeMounts"`
	}
	k8sDeployment struct {
		Spec struct {
			Replicas int `yaml:"replicas"`
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Strategy struct {
				RollingUpdate struct {
					MaxUnavailable any `yaml:"maxUnavailable"`
				} `yaml:"rollingUpdate"`
			} `yaml:"strategy"`
			Template struct {
				Metadata k8sMeta `yaml:"metadata"`
				Spec     struct {
					TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
					SecurityContext               k8sSecurity    `yaml:"securityContext"`
					Containers                    []k8sContainer `yaml:"containers"`
					Volumes                       []struct {
						Name      string `yaml:"name"`
						ConfigMap *struct {
							Name string `yaml:"name"`
						} `yaml:"configMap"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	k8sService struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Name       string `yaml:"name"`
				Port       int    `yaml:"port"`
				TargetPort any    `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	k8sPDB struct {
		Spec struct {
			MaxUnavailable any `yaml:"maxUnavailable"`
			MinAvailable   any `yaml:"minAvailable"`
			Selector       struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		} `yaml:"spec"`
	}
)

// k8sObjects reads every document of kubernetes/*.yaml, keyed "Kind/name".
func k8sObjects(t *testing.T) map[string]*yaml.Node {
	t.Helper()
	paths, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objects := map[string]*yaml.Node{}
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(f)
		for {
			var doc yaml.Node
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			var head struct {
				APIVersion string  `yaml:"apiVersion"`
				Kind       string  `yaml:"kind"`
				Metadata   k8sMeta `yaml:"metadata"`
			}
			if err := doc.Decode(&head); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if head.APIVersion == "" || head.Kind == "" {
				t.Fatalf("%s: a document without apiVersion or kind", path)
			}
			key := head.Kind + "/" + head.Metadata.Name
			if _, dup := objects[key]; dup {
				t.Fatalf("%s: %s defined twice", path, key)
			}
			objects[key] = &doc
		}
		f.Close()
	}
	return objects
}

func decodeObject[T any](t *testing.T, objects map[string]*yaml.Node, key string) T {
	t.Helper()
	var v T
	doc, ok := objects[key]
	if !ok {
		t.Fatalf("no %s in kubernetes/", key)
	}
	if err := doc.Decode(&v); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return v
}

func TestKubernetesDeployment(t *testing.T) {
	objects := k8sObjects(t)
	d := decodeObject[k8sDeployment](t, objects, "Deployment/egressd")
	cm := decodeObject[struct {
		Data map[string]string `yaml:"data"`
	}](t, objects, "ConfigMap/egressd")

	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The config comes from the ConfigMap, mounted as a directory.
	if len(c.Args) != 2 || c.Args[0] != "--config" {
		t.Fatalf("args %q, want [--config <path>]", c.Args)
	}
	dir, file := filepath.Split(c.Args[1])
	var mountVolume string
	for _, m := range c.VolumeMounts {
		if m.MountPath == filepath.Clean(dir) {
			mountVolume = m.Name
			if m.SubPath != "" {
				t.Errorf("the config volume uses subPath %q: subPath mounts never see ConfigMap updates", m.SubPath)
			}
			if !m.ReadOnly {
				t.Errorf("the config volume must be read-only")
			}
		}
	}
	if mountVolume == "" {
		t.Fatalf("no volume mounted at %s", dir)
	}
	var configMap string
	for _, v := range pod.Volumes {
		if v.Name == mountVolume && v.ConfigMap != nil {
			configMap = v.ConfigMap.Name
		}
	}
	if configMap != "egressd" {
		t.Fatalf("volume %q is not ConfigMap egressd", mountVolume)
	}
	data, ok := cm.Data[file]
	if !ok {
		t.Fatalf("ConfigMap egressd has no key %q (keys %q)", file, slices.Sorted(maps.Keys(cm.Data)))
	}
	cfg := loadConfig(t, []byte(data), "ConfigMap egressd "+file)

	// Ports: named container ports match the config's listeners.
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	want := map[string]int{"http": port(t, cfg.Listen.HTTP), "socks5": port(t, cfg.Listen.SOCKS5), "admin": port(t, cfg.Listen.Admin)}
	if diff := cmp.Diff(want, ports); diff != "" {
		t.Errorf("container ports vs the config's listen addresses (-config +deployment):\n%s", diff)
	}
	if host := strings.Split(cfg.Listen.Admin, ":")[0]; host != "0.0.0.0" {
		t.Errorf("listen.admin %q: the kubelet probes the pod IP", cfg.Listen.Admin)
	}
	// The pod IP's admin port is open to every pod without a NetworkPolicy:
	// the status page (clients' addresses and user names) ships off.
	if cfg.Admin.UI || cfg.Admin.Pprof {
		t.Errorf("admin.ui %v, admin.pprof %v: the shipped config serves them to every pod; ship them off", cfg.Admin.UI, cfg.Admin.Pprof)
	}

	// Probes on the admin listener.
	probe := func(name string, p *k8sProbe, path string) {
		t.Helper()
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe on %s", name, path)
			return
		}
		if p.HTTPGet.Path != path || fmt.Sprint(p.HTTPGet.Port) != "admin" {
			t.Errorf("%s: httpGet %s on port %v, want %s on admin", name, p.HTTPGet.Path, p.HTTPGet.Port, path)
		}
	}
	probe("readinessProbe", c.ReadinessProbe, "/readyz")
	probe("livenessProbe", c.LivenessProbe, "/healthz")
	if r := c.ReadinessProbe; r != nil {
		// The pod should leave the Service within drain_delay.
		if notice := time.Duration(r.PeriodSeconds*max(r.FailureThreshold, 1)) * time.Second; notice > cfg.Timeouts.DrainDelay {
			t.Errorf("readiness notices 503 after %s, longer than timeouts.drain_delay %s", notice, cfg.Timeouts.DrainDelay)
		}
	}

	// Draining: no preStop, and the grace period outlasts the drain.
	if c.Lifecycle != nil {
		t.Errorf("no lifecycle hooks: egressd drains on SIGTERM by itself")
	}
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= stopBudget(cfg) {
		t.Errorf("terminationGracePeriodSeconds %s must exceed drain_delay + drain = %s", grace, stopBudget(cfg))
	}
	if fmt.Sprint(d.Spec.Strategy.RollingUpdate.MaxUnavailable) != "0" {
		t.Errorf("rolling updates must start a new pod before draining an old one (maxUnavailable 0)")
	}

	// Locked down.
	isTrue := func(b *bool) bool { return b != nil && *b }
	if !isTrue(pod.SecurityContext.RunAsNonRoot) && !isTrue(c.SecurityContext.RunAsNonRoot) {
		t.Errorf("runAsNonRoot must be true")
	}
	if !isTrue(c.SecurityContext.ReadOnlyRootFilesystem) {
		t.Errorf("readOnlyRootFilesystem must be true")
	}
	if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation must be false")
	}
	if !slices.Contains(c.SecurityContext.Capabilities.Drop, "ALL") || len(c.SecurityContext.Capabilities.Add) > 0 {
		t.Errorf("capabilities: drop ALL, add none; got %+v", c.SecurityContext.Capabilities)
	}
	if pod.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("seccompProfile %q, want RuntimeDefault", pod.SecurityContext.SeccompProfile.Type)
	}

	// Selector and labels.
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("pod template lacks selector label %s=%s", k, v)
		}
	}
}

func TestKubernetesServiceAndPDB(t *testing.T) {
	objects := k8sObjects(t)
	d := decodeObject[k8sDeployment](t, objects, "Deployment/egressd")
	podLabels := d.Spec.Template.Metadata.Labels
	named := map[string]int{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		named[p.Name] = p.ContainerPort
	}

	svc := decodeObject[k8sService](t, objects, "Service/egressd")
	if len(svc.Spec.Selector) == 0 {
		t.Fatal("the Service has no selector")
	}
	for k, v := range svc.Spec.Selector {
		if podLabels[k] != v {
			t.Errorf("Service selector %s=%s does not select the pods", k, v)
		}
	}
	got := map[string]int{}
	for _, p := range svc.Spec.Ports {
		target := fmt.Sprint(p.TargetPort)
		if _, ok := named[target]; !ok {
			t.Errorf("Service port %s targets %q, not a named container port", p.Name, target)
		}
		got[p.Name] = p.Port
	}
	if diff := cmp.Diff(map[string]int{"http": 3128, "socks5": 1080}, got); diff != "" {
		t.Errorf("Service ports (-want +got):\n%s", diff)
	}

	pdb := decodeObject[k8sPDB](t, objects, "PodDisruptionBudget/egressd")
	if diff := cmp.Diff(d.Spec.Selector.MatchLabels, pdb.Spec.Selector.MatchLabels); diff != "" {
		t.Errorf("PDB selector differs from the Deployment's (-deployment +pdb):\n%s", diff)
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Errorf("the PDB sets neither maxUnavailable nor minAvailable")
	}

	// kustomization.yaml lists every manifest.
	data, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	paths, _ := filepath.Glob("kubernetes/*.yaml")
	var manifests []string
	for _, p := range paths {
		if base := filepath.Base(p); base != "kustomization.yaml" {
			manifests = append(manifests, base)
		}
	}
	if diff := cmp.Diff(manifests, slices.Sorted(slices.Values(k.Resources))); diff != "" {
		t.Errorf("kustomization resources (-files +listed):\n%s", diff)
	}
}
