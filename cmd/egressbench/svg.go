package main

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strconv"
)

// panel is one small bar chart of the SVG.
type panel struct {
	Figure figure
	Kinds  []string // series shown
	Limit  float64  // egressd's target, 0 for none
}

func panels() []panel {
	var ps []panel
	for _, g := range goals() {
		if !g.Headline {
			continue
		}
		kinds := []string{kindConnect, kindSOCKS5}
		if g.Kind == kindHTTP {
			kinds = []string{kindHTTP}
		}
		ps = append(ps, panel{Figure: g.Figure, Kinds: kinds, Limit: g.Limit})
	}
	return append(ps,
		panel{Figure: figBulk8, Kinds: []string{kindDirect, kindConnect, kindSOCKS5}},
		panel{Figure: figTunRate, Kinds: []string{kindDirect, kindConnect, kindSOCKS5}},
	)
}

// seriesColor gives egressd one colour, the limit (direct) grey, and the
// peers others.
func seriesColor(s seriesKey) string {
	switch s.Label {
	case "egressd":
		return "#1f77b4"
	case kindDirect:
		return "#9e9e9e"
	case "squid":
		return "#ff7f0e"
	case "smokescreen":
		return "#2ca02c"
	case "dante":
		return "#9467bd"
	}
	return "#8c564b"
}

// writeSVG draws the headline figures as small horizontal bar charts, two
// per row, each bar the median over runs with its value written after it,
// and egressd's target as a dashed red line.
func writeSVG(w io.Writer, d *dataset) error {
	const (
		width    = 980
		colW     = 480
		labelW   = 150
		barMax   = 240
		barH     = 16
		rowH     = 22
		titleH   = 40
		panelGap = 18
	)
	type drawn struct {
		p    panel
		rows []seriesKey
		vals []float64
	}
	var ds []drawn
	for _, p := range panels() {
		var dr drawn
		dr.p = p
		for _, s := range d.series(p.Kinds) {
			if m, ok := median(d.values(s, p.Figure)); ok {
				dr.rows = append(dr.rows, s)
				dr.vals = append(dr.vals, m)
			}
		}
		ds = append(ds, dr)
	}
	panelH := func(dr drawn) int { return titleH + max(len(dr.rows), 1)*rowH + panelGap }
	height := 50
	for i := 0; i < len(ds); i += 2 {
		h := panelH(ds[i])
		if i+1 < len(ds) {
			h = max(h, panelH(ds[i+1]))
		}
		height += h
	}
	bw := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="10" y="24" font-size="16" font-weight="bold">egressd benchmark: headline figures (median of runs; dashed red line = egressd's target)</text>` + "\n")
	y := 50
	for i := 0; i < len(ds); i += 2 {
		rowHeight := 0
		for j := i; j < min(i+2, len(ds)); j++ {
			dr := ds[j]
			x := 10 + (j-i)*colW
			rowHeight = max(rowHeight, panelH(dr))
			f := dr.p.Figure
			dir := "higher is better"
			if f.Lower {
				dir = "lower is better"
			}
			title := fmt.Sprintf("%s (%s; %s)", f.Title, f.Unit, dir)
			p(`<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x, y+16, html.EscapeString(title))
			if len(dr.rows) == 0 {
				p(`<text x="%d" y="%d" fill="#666">not measured</text>`+"\n", x+labelW, y+titleH+12)
				continue
			}
			scale := panelScale(dr.vals, dr.p.Limit)
			for k, s := range dr.rows {
				by := y + titleH + k*rowH - 10
				bl := int(math.Round(dr.vals[k] / scale * barMax))
				clipped := bl > barMax
				bl = min(bl, barMax)
				p(`<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", x+labelW-6, by+12, html.EscapeString(s.String()))
				p(`<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", x+labelW, by, max(bl, 1), barH, seriesColor(s))
				if clipped {
					// An outlier's bar is cut short, marked by a white zigzag.
					zx := x + labelW + barMax - 14
					p(`<polyline points="%d,%d %d,%d %d,%d %d,%d" fill="none" stroke="white" stroke-width="2"/>`+"\n",
						zx, by, zx+4, by+barH/3, zx, by+2*barH/3, zx+4, by+barH)
				}
				p(`<text x="%d" y="%d">%s</text>`+"\n", x+labelW+bl+4, by+12, f.format(dr.vals[k]))
			}
			if dr.p.Limit > 0 {
				lx := x + labelW + int(math.Round(dr.p.Limit/scale*barMax))
				top := y + titleH - 12
				bottom := y + titleH + len(dr.rows)*rowH - 8
				p(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#d62728" stroke-width="1.5" stroke-dasharray="4,3"/>`+"\n", lx, top, lx, bottom)
				p(`<text x="%d" y="%d" fill="#d62728" font-size="10">target %s</text>`+"\n", lx+3, bottom+8, strconv.FormatFloat(dr.p.Limit, 'f', -1, 64))
			}
		}
		y += rowHeight
	}
	p("</svg>\n")
	return bw.Flush()
}

// panelScale returns the value that maps to a full-width bar: the largest
// value or the target, with some room, unless one value is an outlier (more
// than four times the next), whose bar is then cut short so that the others
// stay readable.
func panelScale(vals []float64, limit float64) float64 {
	sorted := append([]float64(nil), vals...)
	slices.Sort(sorted)
	top := 0.0
	if n := len(sorted); n > 0 {
		top = sorted[n-1]
		if n > 1 && sorted[n-2] > 0 && top > 4*sorted[n-2] {
			top = 1.6 * sorted[n-2]
		}
	}
	top = math.Max(top, limit)
	if top <= 0 {
		return 1
	}
	return top * 1.05
}
