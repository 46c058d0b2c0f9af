package quant_test

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/quant/imatrix"
	"github.com/lqc-dev/lqc/testmodels"
	"github.com/lqc-dev/lqc/testmodels/llamacpp"
)

// TestMatchesGGMLQuantizeChunk quantizes with and without importance
// weights and compares the bytes with ggml's own ggml_quantize_chunk
// (llama.cpp de3ff815, through node-llama-cpp's libggml-base): random
// rows with a heavy-tailed importance vector that has zeros, and the
// golden model's matrices with edge-case rows under llama.cpp's own
// importance matrix. The -imat goldens check five types this way from
// files; this reaches every type lqc quantizes with weights.
func TestMatchesGGMLQuantizeChunk(t *testing.T) {
	dir := llamacpp.Require(t)
	type input struct {
		name   string
		rowLen int
		x, qw  []float32
	}
	rng := rand.New(rand.NewPCG(5, 6))
	random := input{name: "random", rowLen: 512, x: make([]float32, 16*512), qw: make([]float32, 512)}
	for i := range random.x {
		random.x[i] = float32(rng.NormFloat64() * math.Exp(0.5*rng.NormFloat64()))
	}
	for j := range random.qw {
		if j%37 != 0 {
			random.qw[j] = float32(math.Exp(2 * rng.NormFloat64()))
		}
	}
	inputs := []input{random}
	model, err := gguf.Open(testmodels.Shared(t, "golden/quant/input-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	mat, err := imatrix.Read(testmodels.Shared(t, "golden/quant/imatrix.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	for i, ti := range model.Tensors {
		if ti.Name != "blk.1.ffn_up.weight" && ti.Name != "blk.1.ffn_down.weight" {
			continue
		}
		tensor, err := model.Tensor(i)
		if err != nil {
			t.Fatal(err)
		}
		x, err := tensor.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, input{ti.Name, int(tensor.RowLen()), x, mat.Entries[ti.Name].Weights()})
	}
	type check struct {
		typ      quant.Type
		in       input
		weighted bool
	}
	var checks []check
	var jobs []llamacpp.QuantJob
	for _, typ := range quant.ConvertibleTypes() {
		if !typ.Quantized() {
			continue
		}
		for _, in := range inputs {
			jobs = append(jobs, llamacpp.QuantJob{Type: uint32(typ), RowLen: in.rowLen, X: in.x})
			checks = append(checks, check{typ, in, false})
			if typ.TakesWeights() {
				jobs = append(jobs, llamacpp.QuantJob{Type: uint32(typ), RowLen: in.rowLen, X: in.x, Imatrix: in.qw})
				checks = append(checks, check{typ, in, true})
			}
		}
	}
	wants, _, err := llamacpp.QuantizeRows(dir, jobs)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range checks {
		got := make([]byte, c.typ.RowSize(int64(len(c.in.x))))
		if err := c.typ.EncodeWeighted(got, c.in.x, c.in.rowLen, jobs[i].Imatrix); err != nil {
			t.Fatal(err)
		}
		if want := wants[i]; !bytes.Equal(got, want) {
			rb := int(c.typ.RowSize(int64(c.in.rowLen)))
			row := 0
			for row*rb < len(got) && bytes.Equal(got[row*rb:(row+1)*rb], want[row*rb:(row+1)*rb]) {
				row++
			}
			t.Errorf("%v, %s, importance %v: bytes differ from ggml_quantize_chunk's, first in row %d", c.typ, c.in.name, c.weighted, row)
		}
	}
	t.Logf("%d quantizations byte-identical to ggml_quantize_chunk's", len(checks))
}
