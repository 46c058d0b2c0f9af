package passes

import (
	"sync"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/quant/calib"
	"github.com/lqc-dev/lqc/quant/gptq"
)

// GPTQ rows are independent once the input's inverse Gram factor is
// known, so a GPTQ tensor stays lazy like any other: the factor is
// computed when the writer first asks for rows, once per input and type,
// and every chunk of rows is then quantized on the writer's workers.

type gptqKey struct {
	in  *calib.Input
	typ quant.Type
}

type lazyQuantizer struct {
	in   *calib.Input
	typ  quant.Type
	opt  gptq.Options
	once sync.Once
	q    *gptq.Quantizer
	err  error
}

func (l *lazyQuantizer) get() (*gptq.Quantizer, error) {
	l.once.Do(func() { l.q, l.err = gptq.New(l.typ, l.in.Cols, l.in.Gram, l.opt) })
	return l.q, l.err
}

type gptqSource struct {
	in *ir.Tensor
	q  *lazyQuantizer
}

func gptqTensor(t *ir.Tensor, q *lazyQuantizer) (*ir.Tensor, error) {
	if _, err := ir.Convert(t, q.typ); err != nil { // the same checks as any conversion
		return nil, err
	}
	return ir.NewTensor(t.Name, q.typ, t.Shape, &gptqSource{in: t, q: q}), nil
}

func (s *gptqSource) ReadRows(dst []byte, first, n int64) error {
	q, err := s.q.get()
	if err != nil {
		return err
	}
	buf := make([]float32, n*s.in.RowLen())
	if err := s.in.ReadRowsF32(buf, first, n); err != nil {
		return err
	}
	return q.Rows(dst, buf)
}

func (s *gptqSource) Release() { s.in.Release() }
