package deployments

import (
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestFarmCostTable recomputes docs/farm.md's cost table from the inputs the
// doc states and its formula, so that a changed price, rule or row cannot
// drift from the others silently.
func TestFarmCostTable(t *testing.T) {
	data, err := os.ReadFile("../docs/farm.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	_, section, ok := strings.Cut(doc, "\n## Cost: what a gigabyte costs\n")
	if !ok {
		t.Fatal("docs/farm.md has no section \"Cost: what a gigabyte costs\"")
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	if !regexp.MustCompile(`us-east-1 on-demand list prices as quoted on \d{4}-\d{2}-\d{2}`).MatchString(section) {
		t.Errorf("the cost section must state the region and date of its prices")
	}

	inputs := map[string]string{}
	var rows [][]string
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| ---") {
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		switch {
		case len(cells) == 2 && cells[0] != "Input":
			inputs[cells[0]] = cells[1]
		case len(cells) == 11 && cells[0] != "TB per month":
			rows = append(rows, cells)
		}
	}

	num := func(s string) float64 {
		t.Helper()
		f, err := strconv.ParseFloat(strings.NewReplacer("$", "", ",", "", "%", "").Replace(s), 64)
		if err != nil {
			t.Fatalf("cost section: %q is not a number", s)
		}
		return f
	}
	input := func(name string) string {
		t.Helper()
		v, ok := inputs[name]
		if !ok {
			t.Fatalf("cost inputs: no row %q", name)
		}
		return v
	}
	hours := num(input("hours per month"))
	azs := num(input("availability zones"))
	natHour := num(input("NAT gateway, per AZ-hour"))
	natGB := num(input("NAT gateway, per GB processed"))
	ipv4Hour := num(input("public IPv4 address, per hour"))
	cpuPlan := num(strings.TrimSuffix(input("CPU plan per vCPU"), " Gbit/s"))
	minPerAZ := num(input("proxies per AZ, at least"))
	peakRatio := num(input("peak-to-average traffic"))
	uploadShare := num(input("bytes leaving AWS (uploads), share of T")) / 100

	m := regexp.MustCompile(`^c7i\.large: (\d+) vCPUs, ([\d.]+) Gbit/s baseline bandwidth, \$([\d.]+) per hour$`).FindStringSubmatch(input("proxy instance"))
	if m == nil {
		t.Fatalf("proxy instance %q: want \"c7i.large: N vCPUs, X Gbit/s baseline bandwidth, $P per hour\"", input("proxy instance"))
	}
	vcpus, baseline, instanceHour := num(m[1]), num(m[2]), num(m[3])
	// The instance the module defaults to is the one the table prices.
	if def := loadModules(t)[farmDir].defaultOf(t, "instance_type").AsString(); def != "c7i.large" {
		t.Errorf("the farm module's instance_type default is %q, the cost table prices c7i.large", def)
	}

	type tier struct{ price, gb float64 }
	var tiers []tier
	dto := input("internet data transfer out, per GB")
	for _, tm := range regexp.MustCompile(`\$([\d.]+) (?:first|next) ([\d,]+) TB`).FindAllStringSubmatch(dto, -1) {
		tiers = append(tiers, tier{num(tm[1]), num(tm[2]) * 1024})
	}
	bm := regexp.MustCompile(`\$([\d.]+) beyond$`).FindStringSubmatch(dto)
	if len(tiers) == 0 || bm == nil {
		t.Fatalf("internet data transfer out %q: want \"$P first N TB, $P next N TB, ..., $P beyond\"", dto)
	}
	tiers = append(tiers, tier{num(bm[1]), math.Inf(1)})
	transferOut := func(gb float64) float64 {
		cost := 0.0
		for _, tr := range tiers {
			part := math.Min(gb, tr.gb)
			cost += part * tr.price
			gb -= part
		}
		return cost
	}

	if len(rows) < 3 {
		t.Fatalf("cost table: %d rows, want at least 1, 10 and 100 TB", len(rows))
	}
	seen := map[float64]bool{}
	for _, r := range rows {
		tb := num(r[0])
		seen[tb] = true
		gb := tb * 1024
		peak := gb * (1 << 30) * 8 / (hours * 3600) / 1e9 * peakRatio
		perProxy := math.Min(vcpus*cpuPlan, baseline)
		proxies := azs * math.Max(minPerAZ, math.Ceil(peak/azs/perProxy))
		instances := proxies * hours * instanceHour
		natFixed := azs * hours * (natHour + ipv4Hour)
		natPerGB := gb * natGB
		proxyIPv4 := proxies * hours * ipv4Hour
		out := transferOut(gb * uploadShare)
		natFarm := instances + natFixed + natPerGB + out
		natFree := instances + proxyIPv4 + out

		for i, want := range []struct {
			name  string
			value float64
			tol   float64
		}{
			{"peak Gbit/s", peak, 0.0005},
			{"proxies", proxies, 0},
			{"proxies' hours", instances, 0.005},
			{"NAT gateways' hours and addresses", natFixed, 0.005},
			{"NAT gateways' per-GB charge", natPerGB, 0.005},
			{"proxies' public IPv4", proxyIPv4, 0.005},
			{"data transfer out (both)", out, 0.005},
			{"NAT gateway farm", natFarm, 0.005},
			{"NAT-free farm", natFree, 0.005},
			{"NAT-free saves", natFarm - natFree, 0.005},
		} {
			if got := num(r[i+1]); math.Abs(got-want.value) > want.tol+1e-9 {
				t.Errorf("%v TB per month: %s is %s in the doc, the inputs give %.3f", tb, want.name, r[i+1], want.value)
			}
		}
	}
	for _, tb := range []float64{1, 10, 100} {
		if !seen[tb] {
			t.Errorf("cost table has no row for %v TB per month", tb)
		}
	}
}
