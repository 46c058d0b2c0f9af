package runtime

import (
	"context"
	"fmt"
	"math"
	"sort"
)

// EvalOptions configure Evaluate.
type EvalOptions struct {
	Ctx int // tokens per chunk (llama-perplexity's -c)
	// Chunks, when positive, evaluates only the first Chunks chunks
	// (llama-perplexity's --chunks).
	Chunks int
	BOS    int32 // written over each chunk's first token; -1 for none
	// Progress, when set, is called after each chunk.
	Progress func(done, total int)
	// Adapters are applied to the evaluated model (not the reference).
	Adapters []Applied
}

// EvalResult holds llama-perplexity's measures of a model, and with a
// reference model its KL divergence from it.
type EvalResult struct {
	Chunks    int        `json:"chunks"`        // chunks evaluated
	Tokens    int        `json:"tokens"`        // tokens scored
	PPL       float64    `json:"ppl"`           // exp(mean NLL)
	PPLStdErr float64    `json:"ppl_stderr"`    //
	Ref       *RefResult `json:"ref,omitempty"` // the comparison with --ref
}

// RefResult compares a model with a reference on the same tokens.
type RefResult struct {
	PPL         float64 `json:"ppl"`           // the reference's perplexity
	PPLRatio    float64 `json:"ppl_ratio"`     // PPL / reference PPL
	MeanLnRatio float64 `json:"mean_ln_ratio"` // mean ln(PPL/PPL_ref)
	KLDMean     float64 `json:"kld_mean"`      // mean KL(P_ref ‖ P) per token
	KLDStdErr   float64 `json:"kld_stderr"`
	KLDMedian   float64 `json:"kld_median"`
	KLD99       float64 `json:"kld_p99"` // 99th percentile
	KLDMax      float64 `json:"kld_max"`
	Top1        float64 `json:"top1"` // fraction of tokens whose most likely next token agrees
	Top1StdErr  float64 `json:"top1_stderr"`
}

// Evaluate scores tokens as llama-perplexity does: the text is cut into
// chunks of opt.Ctx tokens, each evaluated on its own with its first token
// replaced by BOS, and the second half of each chunk is scored (logit row
// i predicts token i+1, for i from Ctx/2 to Ctx-2). With ref, both models
// see the same chunks and the KL divergence of m's next-token
// distribution from ref's is measured at every scored token.
func Evaluate(ctx context.Context, m, ref *Model, tokens []int32, opt EvalOptions) (*EvalResult, error) {
	n := opt.Ctx
	if n < 4 {
		return nil, fmt.Errorf("context %d is too small", n)
	}
	chunks := len(tokens) / n
	if opt.Chunks > 0 {
		chunks = min(chunks, opt.Chunks)
	}
	if chunks == 0 {
		return nil, fmt.Errorf("the text has %d tokens, fewer than one chunk of %d; give more text or a smaller --ctx", len(tokens), n)
	}
	sess, err := m.NewSession(n)
	if err != nil {
		return nil, err
	}
	if err := sess.SetAdapters(opt.Adapters...); err != nil {
		return nil, err
	}
	var refSess *Session
	if ref != nil {
		if ref.VocabSize() != m.VocabSize() {
			return nil, fmt.Errorf("reference has %d tokens in its vocabulary, the model %d", ref.VocabSize(), m.VocabSize())
		}
		if refSess, err = ref.NewSession(n); err != nil {
			return nil, err
		}
	}
	V := m.VocabSize()
	first := n / 2
	var nll, refNLL, lnRatio []float64
	var klds []float64
	var same int
	for c := range chunks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := append([]int32(nil), tokens[c*n:(c+1)*n]...)
		if opt.BOS >= 0 {
			chunk[0] = opt.BOS
		}
		sess.Reset()
		logits, err := sess.Forward(chunk, true)
		if err != nil {
			return nil, err
		}
		var refLogits []float32
		if refSess != nil {
			refSess.Reset()
			if refLogits, err = refSess.Forward(chunk, true); err != nil {
				return nil, err
			}
		}
		for i := first; i < n-1; i++ {
			next := chunk[i+1]
			lp := LogSoftmax(logits[i*V : (i+1)*V])
			v := -lp[next]
			nll = append(nll, v)
			if refLogits != nil {
				rlp := LogSoftmax(refLogits[i*V : (i+1)*V])
				refNLL = append(refNLL, -rlp[next])
				lnRatio = append(lnRatio, v-(-rlp[next]))
				var kld float64
				for j := range rlp {
					if p := math.Exp(rlp[j]); p > 0 {
						kld += p * (rlp[j] - lp[j])
					}
				}
				klds = append(klds, max(kld, 0))
				if Argmax(logits[i*V:(i+1)*V]) == Argmax(refLogits[i*V:(i+1)*V]) {
					same++
				}
			}
		}
		if opt.Progress != nil {
			opt.Progress(c+1, chunks)
		}
	}
	res := &EvalResult{Chunks: chunks, Tokens: len(nll)}
	mean, se := meanStdErr(nll)
	res.PPL = math.Exp(mean)
	res.PPLStdErr = res.PPL * se
	if ref != nil {
		rmean, _ := meanStdErr(refNLL)
		lr, _ := meanStdErr(lnRatio)
		km, kse := meanStdErr(klds)
		sorted := append([]float64(nil), klds...)
		sort.Float64s(sorted)
		top1 := float64(same) / float64(len(klds))
		res.Ref = &RefResult{
			PPL: math.Exp(rmean), PPLRatio: math.Exp(mean - rmean), MeanLnRatio: lr,
			KLDMean: km, KLDStdErr: kse, KLDMedian: quantile(sorted, 0.5), KLD99: quantile(sorted, 0.99),
			KLDMax: sorted[len(sorted)-1], Top1: top1,
			Top1StdErr: math.Sqrt(top1 * (1 - top1) / float64(len(klds)-1)),
		}
	}
	return res, nil
}

// LogSoftmax is the log-probabilities of logits, in float64.
func LogSoftmax(logits []float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = max(mx, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(sum)
	out := make([]float64, len(logits))
	for i, v := range logits {
		out[i] = float64(v) - lse
	}
	return out
}

func meanStdErr(v []float64) (mean, stderr float64) {
	if len(v) == 0 {
		return 0, 0
	}
	var s, s2 float64
	for _, x := range v {
		s += x
		s2 += x * x
	}
	mean = s / float64(len(v))
	if len(v) > 1 {
		variance := (s2/float64(len(v)) - mean*mean) * float64(len(v)) / float64(len(v)-1)
		stderr = math.Sqrt(max(variance, 0) / float64(len(v)))
	}
	return mean, stderr
}

// quantile of sorted values, linearly interpolated.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := q * float64(len(sorted)-1)
	lo := int(pos)
	if lo+1 >= len(sorted) {
		return sorted[lo]
	}
	f := pos - float64(lo)
	return sorted[lo]*(1-f) + sorted[lo+1]*f
}
