package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lqc-dev/lqc/testmodels"
)

// The quality report (make quality): every quantization type and method
// lqc offers, on the real stories260K and on the larger synthetic model of
// shared/golden/quant, converted by lqc and measured by lqc eval against
// the F32 model on the evaluation text at llama-perplexity's settings
// (context 128, second half of each chunk scored). Calibration uses a
// different text (golden/quant/imatrix-calib.txt). llama.cpp's own
// figures for the same files and text (shared/golden/real/quality.json)
// stand beside lqc's where they exist; the plain (rtn) files are
// byte-identical to llama.cpp's, so those rows check lqc eval too.

type qualityModel struct {
	Name  string   `json:"name"`
	Src   string   `json:"src"` // relative to the shared folder
	Types []string `json:"-"`
}

type qualityRow struct {
	Model         string   `json:"model"`
	Type          string   `json:"type"`
	Method        string   `json:"method"`
	BitsPerWeight float64  `json:"bits_per_weight"`
	PPL           float64  `json:"ppl"`
	KLD           float64  `json:"kld_mean"`
	KLDStdErr     float64  `json:"kld_stderr"`
	Top1          float64  `json:"top1"`
	LlamaPPL      *float64 `json:"llama_cpp_ppl,omitempty"`
	LlamaKLD      *float64 `json:"llama_cpp_kld_mean,omitempty"`
	LlamaTop1     *float64 `json:"llama_cpp_top1,omitempty"`
}

var qualityMethods = []string{"rtn", "imatrix", "awq", "gptq", "awq+gptq"}

func benchQuality(work string, threads int) error {
	lqc, err := buildLQC(work)
	if err != nil {
		return err
	}
	shared := testmodels.SharedDir()
	evalText := filepath.Join(shared, "golden/real/eval.txt")
	calibText := filepath.Join(shared, "golden/quant/imatrix-calib.txt")
	llama, err := llamaQuality(filepath.Join(shared, "golden/real/quality.json"))
	if err != nil {
		return err
	}
	models := []qualityModel{
		{Name: "stories260K", Src: "models/stories260K/hf",
			Types: []string{"q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl", "q4_k_m"}},
		{Name: "synthetic 256/768 (golden/quant)", Src: "golden/quant/input-f32.gguf",
			Types: []string{"q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "iq4_nl", "iq4_xs", "q3_k_m", "q2_k"}},
	}
	var rows []qualityRow
	for _, m := range models {
		src := filepath.Join(shared, m.Src)
		for _, typ := range m.Types {
			for _, method := range qualityMethods {
				out := filepath.Join(work, "quality.gguf")
				args := []string{"convert", src, "-o", out, "--quant", typ, "--method", method, "-q", "-t", fmt.Sprint(threads)}
				if method != "rtn" {
					args = append(args, "--calib", calibText, "--calib-ctx", "128")
				}
				if _, _, err := childRun(lqc, args...); err != nil {
					return err
				}
				row, err := measureQuality(lqc, out, src, evalText, threads)
				if err != nil {
					return err
				}
				row.Model, row.Type, row.Method = m.Name, strings.ToUpper(typ), method
				if l, ok := llama[row.Type]; ok && m.Name == "stories260K" && method == "rtn" {
					row.LlamaPPL, row.LlamaKLD, row.LlamaTop1 = &l.PPL, &l.KLD, &l.Top1
				}
				fmt.Fprintf(os.Stderr, "%s %s %s: KLD %.5f\n", m.Name, row.Type, method, row.KLD)
				rows = append(rows, row)
			}
		}
	}
	outDir := filepath.Join(testmodels.RepoRoot(), "bin", "quality")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	writeQualityTable(&md, rows, llama)
	fmt.Print(md.String())
	js, err := json.MarshalIndent(struct {
		EvalText  string       `json:"eval_text"`
		CalibText string       `json:"calib_text"`
		Ctx       int          `json:"ctx"`
		Rows      []qualityRow `json:"rows"`
	}{"golden/real/eval.txt", "golden/quant/imatrix-calib.txt", 128, rows}, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "quality.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "quality.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwritten: %s, %s\n", filepath.Join(outDir, "quality.md"), filepath.Join(outDir, "quality.json"))
	return nil
}

// measureQuality evaluates a file against its F32 source and reads its
// bits per weight.
func measureQuality(lqc, file, ref, evalText string, threads int) (qualityRow, error) {
	stdout, _, err := childRun(lqc, "eval", file, "--ref", ref, "--data", evalText, "-c", "128", "--json", "-t", fmt.Sprint(threads))
	if err != nil {
		return qualityRow{}, err
	}
	var ev struct {
		Result struct {
			PPL float64 `json:"ppl"`
			Ref struct {
				KLDMean   float64 `json:"kld_mean"`
				KLDStdErr float64 `json:"kld_stderr"`
				Top1      float64 `json:"top1"`
			} `json:"ref"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
		return qualityRow{}, fmt.Errorf("lqc eval --json: %w", err)
	}
	stdout, _, err = childRun(lqc, "inspect", "--json", file)
	if err != nil {
		return qualityRow{}, err
	}
	var in struct {
		BitsPerWeight float64 `json:"bits_per_weight"`
	}
	if err := json.Unmarshal([]byte(stdout), &in); err != nil {
		return qualityRow{}, fmt.Errorf("lqc inspect --json: %w", err)
	}
	r := ev.Result
	return qualityRow{BitsPerWeight: in.BitsPerWeight, PPL: r.PPL, KLD: r.Ref.KLDMean, KLDStdErr: r.Ref.KLDStdErr, Top1: r.Ref.Top1}, nil
}

type llamaFigures struct{ PPL, KLD, Top1 float64 }

// llamaQuality reads llama-perplexity's figures for stories260K, by type.
func llamaQuality(path string) (map[string]llamaFigures, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var q struct {
		Results []struct {
			File string  `json:"file"`
			PPL  float64 `json:"ppl"`
			KLD  float64 `json:"mean_kld"`
			Top1 float64 `json:"same_top_p_pct"`
		} `json:"results"`
	}
	if err := json.Unmarshal(data, &q); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]llamaFigures{}
	for _, r := range q.Results {
		typ := strings.TrimSuffix(strings.TrimPrefix(r.File, "stories260K-"), ".gguf")
		out[typ] = llamaFigures{r.PPL, r.KLD, r.Top1 / 100}
	}
	return out, nil
}

func writeQualityTable(w io.Writer, rows []qualityRow, llama map[string]llamaFigures) {
	fmt.Fprintln(w, "## Quantization quality: lqc eval against F32, eval.txt, context 128 (calibration: imatrix-calib.txt)")
	model := ""
	for _, r := range rows {
		if r.Model != model {
			model = r.Model
			fmt.Fprintf(w, "\n### %s\n\n", model)
			fmt.Fprintln(w, "| type | method | bits/weight | PPL | mean KLD | top-1 | llama.cpp PPL | llama.cpp KLD | llama.cpp top-1 |")
			fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
		}
		lp, lk, lt := "", "", ""
		if r.LlamaKLD != nil {
			lp, lk, lt = fmt.Sprintf("%.4f", *r.LlamaPPL), fmt.Sprintf("%.5f", *r.LlamaKLD), fmt.Sprintf("%.2f%%", 100**r.LlamaTop1)
		}
		fmt.Fprintf(w, "| %s | %s | %.2f | %.4f | %.5f ± %.5f | %.2f%% | %s | %s | %s |\n",
			r.Type, r.Method, r.BitsPerWeight, r.PPL, r.KLD, r.KLDStdErr, 100*r.Top1, lp, lk, lt)
	}
	// The goal: at about 4.5 bits per weight, lqc's best method against
	// llama.cpp's Q4_0 on the same model and text. "About 4.5" is any file
	// no larger per weight than the Q4_0 file (norms, embeddings and
	// fallbacks included, which is why stories260K's files weigh more).
	fmt.Fprintln(w, "\n### Best method at Q4_0's size against llama.cpp's Q4_0")
	fmt.Fprintln(w)
	for _, model := range []string{"stories260K", "synthetic 256/768 (golden/quant)"} {
		var q40 *qualityRow
		for i, r := range rows {
			if r.Model == model && r.Type == "Q4_0" && r.Method == "rtn" {
				q40 = &rows[i]
			}
		}
		if q40 == nil {
			continue
		}
		best := *q40
		for _, r := range rows {
			if r.Model == model && r.BitsPerWeight <= q40.BitsPerWeight*1.001 && r.KLD < best.KLD {
				best = r
			}
		}
		ref, src := q40.KLD, "llama.cpp's bytes, measured by lqc eval"
		if model == "stories260K" {
			ref, src = llama["Q4_0"].KLD, "llama-perplexity"
		}
		fmt.Fprintf(w, "- %s: %s %s, %.2f bits/weight (Q4_0: %.2f), mean KLD %.5f vs llama.cpp Q4_0 %.5f (%s): %.0f%% lower\n",
			model, best.Type, best.Method, best.BitsPerWeight, q40.BitsPerWeight, best.KLD, ref, src, 100*(1-best.KLD/ref))
	}
	// No plain type may be worse than llama.cpp's: the files are
	// byte-identical, so this checks lqc eval against llama-perplexity.
	var types []string
	for typ := range llama {
		types = append(types, typ)
	}
	sort.Strings(types)
	fmt.Fprintln(w, "\n### lqc rtn against llama.cpp's figures (stories260K)")
	fmt.Fprintln(w)
	for _, typ := range types {
		for _, r := range rows {
			if r.Model == "stories260K" && r.Type == typ && r.Method == "rtn" {
				fmt.Fprintf(w, "- %s: lqc KLD %.5f ± %.5f, llama.cpp %.5f\n", typ, r.KLD, r.KLDStdErr, llama[typ].KLD)
			}
		}
	}
}
