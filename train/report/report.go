// Package report writes what a rank sweep of lqc finetune measured: a
// markdown table, the same as JSON, and plots (PNG and SVG) of the loss
// against the step for each rank and of what each rank recovered.
package report

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Point is one (step, value) of a curve.
type Point struct {
	Step  int     `json:"step"`
	Value float64 `json:"value"`
}

// Run is one adapter of the sweep.
type Run struct {
	Rank      int     `json:"rank"`
	Params    int     `json:"trainable_params"`
	KLD       float64 `json:"kld_mean,omitempty"` // final (best) eval mean KLD against the teacher
	BaseKLD   float64 `json:"base_kld_mean,omitempty"`
	Recovered float64 `json:"recovered,omitempty"` // (KLD_base − KLD)/KLD_base
	Top1      float64 `json:"top1,omitempty"`
	PPL       float64 `json:"ppl"`
	Seconds   float64 `json:"seconds"`
	TokensPS  float64 `json:"tokens_per_second"`
	PeakRSS   int64   `json:"peak_rss_bytes"`
	Adapter   string  `json:"adapter"`
	Train     []Point `json:"train_loss"`
	Eval      []Point `json:"eval"` // KLD (distillation) or perplexity per evaluation
}

// Sweep is the whole report.
type Sweep struct {
	Title     string `json:"title"`
	Objective string `json:"objective"` // distill or sft
	Command   string `json:"command"`
	Runs      []Run  `json:"runs"`
}

// Write puts report.md, report.json, loss.{png,svg} and (distillation)
// recovered.{png,svg} into dir.
func Write(dir string, s *Sweep) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(markdown(s)), 0o644); err != nil {
		return err
	}
	loss, err := lossPlot(s)
	if err != nil {
		return err
	}
	if err := save(loss, dir, "loss"); err != nil {
		return err
	}
	if s.Objective == "distill" {
		rec, err := recoveredPlot(s)
		if err != nil {
			return err
		}
		if err := save(rec, dir, "recovered"); err != nil {
			return err
		}
	}
	return nil
}

func markdown(s *Sweep) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n`%s`\n\n", s.Title, s.Command)
	if s.Objective == "distill" {
		b.WriteString("| rank | trainable params | eval mean KLD | base KLD | gap recovered | top-1 | PPL | wall time | train tok/s | peak RSS |\n")
		b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range s.Runs {
			fmt.Fprintf(&b, "| %d | %d | %.5f | %.5f | %.1f%% | %.2f%% | %.4f | %.1f s | %.0f | %.0f MiB |\n", r.Rank, r.Params, r.KLD, r.BaseKLD,
				100*r.Recovered, 100*r.Top1, r.PPL, r.Seconds, r.TokensPS, float64(r.PeakRSS)/(1<<20))
		}
		b.WriteString("\nGap recovered: (KLD_base − KLD_base+adapter)/KLD_base, mean KL divergence from the teacher on the evaluation text, as `lqc eval` measures it.\n")
	} else {
		b.WriteString("| rank | trainable params | eval PPL | final train loss | wall time | train tok/s | peak RSS |\n")
		b.WriteString("|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range s.Runs {
			last := 0.0
			if n := len(r.Train); n > 0 {
				last = r.Train[n-1].Value
			}
			fmt.Fprintf(&b, "| %d | %d | %.4f | %.4f | %.1f s | %.0f | %.0f MiB |\n", r.Rank, r.Params, r.PPL, last, r.Seconds, r.TokensPS, float64(r.PeakRSS)/(1<<20))
		}
	}
	b.WriteString("\n![loss per step](loss.svg)\n")
	if s.Objective == "distill" {
		b.WriteString("\n![gap recovered per rank](recovered.svg)\n")
	}
	return b.String()
}

var palette = []color.Color{
	color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{44, 160, 44, 255},
	color.RGBA{214, 39, 40, 255}, color.RGBA{148, 103, 189, 255}, color.RGBA{140, 86, 75, 255},
}

func lossPlot(s *Sweep) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = s.Title + ": training loss"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss (" + s.Objective + ")"
	p.Legend.Top = true
	for i, r := range s.Runs {
		xy := make(plotter.XYs, len(r.Train))
		for k, pt := range r.Train {
			xy[k] = plotter.XY{X: float64(pt.Step), Y: pt.Value}
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, err
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("rank %d", r.Rank), l)
	}
	p.Add(plotter.NewGrid())
	return p, nil
}

func recoveredPlot(s *Sweep) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = s.Title + ": quantization gap recovered"
	p.X.Label.Text = "rank"
	p.Y.Label.Text = "share of the base's mean KLD removed (%)"
	xy := make(plotter.XYs, len(s.Runs))
	for i, r := range s.Runs {
		xy[i] = plotter.XY{X: float64(r.Rank), Y: 100 * r.Recovered}
	}
	lp, pts, err := plotter.NewLinePoints(xy)
	if err != nil {
		return nil, err
	}
	lp.Color, pts.Color = palette[0], palette[0]
	p.Add(lp, pts, plotter.NewGrid())
	p.Y.Min, p.Y.Max = 0, 100
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	return p, nil
}

func save(p *plot.Plot, dir, name string) error {
	for _, ext := range []string{"png", "svg"} {
		if err := p.Save(7*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, name+"."+ext)); err != nil {
			return fmt.Errorf("%s.%s: %w", name, ext, err)
		}
	}
	return nil
}
