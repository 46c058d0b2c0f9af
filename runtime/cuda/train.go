package cuda

import (
	"fmt"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cuda/driver"
)

// The backward ops (ir/grad.go) and the losses of a training graph; the
// kernels sum in a fixed order, as the CPU's do.

// runTraining dispatches the training ops; ok is false for other ops.
func (b *Backend) runTraining(op string, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) (ok bool, err error) {
	switch op {
	case "SiLUGrad":
		return true, b.elementGrad("silu_grad_f32", out, in[0], in[1])
	case "RMSNormGrad":
		if attrs.Str("wrt") == "w" {
			return true, fmt.Errorf("cuda: RMSNormGrad with respect to the norm's weight: no kernel (lqc trains adapters, not norms)")
		}
		return true, b.rmsNormGrad(out, in[0], in[1], in[2], float32(attrs.Float("eps")))
	case "LinearT":
		return true, b.linearT(out, in[0], in[1])
	case "LinearGradW":
		return true, b.linearGradW(out, in[0], in[1])
	case "CrossEntropy":
		return true, b.rowLoss("cross_entropy_rows_f32", out, in[0], in[1])
	case "CrossEntropyGrad":
		return true, b.lossGrad("cross_entropy_grad_f32", out, in[0], in[1], in[2])
	case "KLDiv":
		return true, b.rowLoss("kl_div_rows_f32", out, in[0], in[1])
	case "KLDivGrad":
		return true, b.lossGrad("kl_div_grad_f32", out, in[0], in[1], in[2])
	}
	return false, nil
}

// matrix is a 2-D operand of a product as the kernels read it: an
// uploaded weight of any type, or a dense float32 tensor (a trained
// parameter, which the trainer binds as an activation).
type matrix struct {
	typ                    quant.Type
	rows, rowLen, rowBytes int
	ptr                    driver.Ptr
}

func matrixOf(t *lqrt.Tensor, what string) (matrix, error) {
	if w, ok := t.Data.(*devWeight); ok {
		return matrix{w.typ, w.rows, w.rowLen, w.rowBytes, w.buf.ptr}, nil
	}
	if len(t.Shape) != 2 {
		return matrix{}, fmt.Errorf("cuda: %s: want a matrix, have %v%v", what, t.Type, t.Shape)
	}
	p, err := dense(t, what)
	if err != nil {
		return matrix{}, err
	}
	return matrix{quant.F32, t.Shape[0], t.Shape[1], 4 * t.Shape[1], p}, nil
}

func (b *Backend) elementGrad(kernel string, out, x, dy *lqrt.Tensor) error {
	o, xp, err := dense2(kernel, out, x)
	if err != nil {
		return err
	}
	g, err := dense(dy, kernel)
	if err != nil {
		return err
	}
	return b.launchN(kernel, out.Len(), o, xp, g, int32(out.Len()))
}

func (b *Backend) rmsNormGrad(out, x, w, dy *lqrt.Tensor, eps float32) error {
	o, xp, err := dense2("RMSNormGrad", out, x)
	if err != nil {
		return err
	}
	wp, err := ptr(w)
	if err != nil {
		return err
	}
	g, err := dense(dy, "RMSNormGrad")
	if err != nil {
		return err
	}
	d := x.Shape[len(x.Shape)-1]
	if x.Len() == 0 {
		return nil
	}
	return b.launch("rms_norm_grad_f32", driver.Dim3{X: uint32(x.Len() / d)}, driver.Dim3{X: 256}, o, xp, wp, g, int32(d), eps)
}

// linearT is dx = dy·W on a weight of any type (or a float32 parameter).
func (b *Backend) linearT(dx, dy, w *lqrt.Tensor) error {
	m, err := matrixOf(w, "LinearT")
	if err != nil {
		return err
	}
	o, g, err := dense2("LinearT", dx, dy)
	if err != nil {
		return err
	}
	T := dy.Len() / m.rows
	if T == 0 {
		return nil
	}
	if m.rowLen%32 != 0 {
		if m.typ != quant.F32 {
			return fmt.Errorf("cuda: LinearT on %v rows of %d values: no kernel", m.typ, m.rowLen)
		}
		return b.launchN("linear_t_f32_any", T*m.rowLen, o, g, m.ptr, int32(m.rowLen), int32(m.rows), int32(T))
	}
	kernel, ok := linearKernels[m.typ]
	if !ok {
		return fmt.Errorf("cuda: LinearT on %v weights: no kernel", m.typ)
	}
	groups := m.rowLen / 32
	const threads = 64
	grid := driver.Dim3{X: uint32((groups + threads - 1) / threads), Y: uint32((T + linearTokens - 1) / linearTokens)}
	return b.launch("linear_t_"+kernel[len("linear_"):], grid, driver.Dim3{X: threads}, o, g, m.ptr, int32(m.rowLen), int32(m.rows), int32(m.rowBytes), int32(T))
}

// linearGradW is dW = Σ_t dy[t]ᵀ·x[t].
func (b *Backend) linearGradW(dw, dy, x *lqrt.Tensor) error {
	o, g, err := dense2("LinearGradW", dw, dy)
	if err != nil {
		return err
	}
	xp, err := dense(x, "LinearGradW")
	if err != nil {
		return err
	}
	nout, in := dw.Shape[0], dw.Shape[1]
	return b.launchN("linear_grad_w_f32", nout*in, o, g, xp, int32(dy.Len()/max(nout, 1)), int32(nout), int32(in))
}

// rowLoss sums a loss over rows: one kernel writes each row's term, one
// thread adds them in order.
func (b *Backend) rowLoss(kernel string, out, logits, second *lqrt.Tensor) error {
	lp, err := dense(logits, kernel)
	if err != nil {
		return err
	}
	o, err := dense(out, kernel)
	if err != nil {
		return err
	}
	sp, err := ptr(second) // targets (I32) or the teacher's logits
	if err != nil {
		return err
	}
	V := logits.Shape[len(logits.Shape)-1]
	T := logits.Len() / V
	if err := b.checkTargets(second, V); err != nil {
		return err
	}
	per, err := b.alloc(int64(4 * max(T, 1)))
	if err != nil {
		return err
	}
	if T > 0 {
		if err := b.launch(kernel, driver.Dim3{X: uint32(T)}, driver.Dim3{X: uint32(blockFor(V))}, per.ptr, lp, sp, int32(V)); err != nil {
			return err
		}
	}
	err = b.launch("sum_in_order_f32", driver.Dim3{X: 1}, driver.Dim3{X: 1}, o, per.ptr, int32(T))
	keepUntilLaunched(per)
	return err
}

// lossGrad is a loss's gradient with respect to the logits, scaled by
// dl (a one-value tensor on the device).
func (b *Backend) lossGrad(kernel string, out, logits, second, dl *lqrt.Tensor) error {
	o, lp, err := dense2(kernel, out, logits)
	if err != nil {
		return err
	}
	sp, err := ptr(second)
	if err != nil {
		return err
	}
	dp, err := dense(dl, kernel)
	if err != nil {
		return err
	}
	V := logits.Shape[len(logits.Shape)-1]
	if err := b.checkTargets(second, V); err != nil {
		return err
	}
	if logits.Len() == 0 {
		return nil
	}
	return b.launch(kernel, driver.Dim3{X: uint32(logits.Len() / V)}, driver.Dim3{X: uint32(blockFor(V))}, o, lp, sp, dp, int32(V))
}

// checkTargets refuses target ids outside the vocabulary (from their
// host copy), as the CPU backend does; other operands pass.
func (b *Backend) checkTargets(t *lqrt.Tensor, V int) error {
	d, ok := t.Data.(*devTensor)
	if !ok || t.Type != quant.I32 {
		return nil
	}
	for pos, y := range d.host {
		if y >= int32(V) {
			return fmt.Errorf("target %d at position %d is outside the vocabulary of %d", y, pos, V)
		}
	}
	return nil
}
