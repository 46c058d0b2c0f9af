package testmodels

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"testing"
)

// PromptReference reads a reference prompt of the shared fixtures: the
// token ids of dir/name.json ("prompt_ids") and the float32 logits of
// every position, dir/name_logits.f32.bin (dir relative to the shared
// folder, as Shared takes it).
func PromptReference(t testing.TB, dir, name string) (ids []int32, logits []float32) {
	t.Helper()
	var r struct {
		PromptIDs []int32 `json:"prompt_ids"`
	}
	b, err := os.ReadFile(Shared(t, dir, name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(Shared(t, dir, name+"_logits.f32.bin"))
	if err != nil {
		t.Fatal(err)
	}
	logits = make([]float32, len(raw)/4)
	for i := range logits {
		logits[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return r.PromptIDs, logits
}

// CompareLogits returns KL(P_a ‖ P_b) of the softmaxes of two logit rows
// and whether their most likely tokens agree.
func CompareLogits(a, b []float32) (float64, bool) {
	logSoftmax := func(x []float32) ([]float64, int) {
		mx, arg := math.Inf(-1), 0
		for i, v := range x {
			if float64(v) > mx {
				mx, arg = float64(v), i
			}
		}
		var sum float64
		for _, v := range x {
			sum += math.Exp(float64(v) - mx)
		}
		out := make([]float64, len(x))
		for i, v := range x {
			out[i] = float64(v) - mx - math.Log(sum)
		}
		return out, arg
	}
	la, ia := logSoftmax(a)
	lb, ib := logSoftmax(b)
	var kld float64
	for i := range la {
		kld += math.Exp(la[i]) * (la[i] - lb[i])
	}
	return kld, ia == ib
}
