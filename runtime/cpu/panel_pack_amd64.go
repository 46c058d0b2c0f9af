//go:build amd64

package cpu

import (
	"sync"
	"unsafe"

	"github.com/lqc-dev/lqc/quant"
)

// Packing a panel: sixteen rows' bytes go side by side, one row per 32-bit
// lane, by gathers (gatherPanel) that follow a program of chunks made once
// per weight type and row length; each row's scales, which need decoding,
// are written by Go. A prompt packs every weight once, so at 64 tokens
// packing row by row in Go cost as much as the products.

// panelChunk is one gather of a panel's program: the dword at src (from a
// row's start) of every row, ((v >> shift) & mask) ^ xor, to the 64 bytes
// at dst (from the panel's start). Its layout is gatherPanel's.
type panelChunk struct {
	src, dst, shift int32
	mask, xor       uint32
}

// copyChunk moves a dword as it is.
func copyChunk(src, dst int) panelChunk {
	return panelChunk{src: int32(src), dst: int32(dst), mask: ^uint32(0)}
}

var panelPrograms sync.Map // programKey → []panelChunk

type programKey struct {
	t  *panelType
	in int
}

// program is the panel program of rows of in values, made once.
func (pt *panelType) program(in int) []panelChunk {
	k := programKey{pt, in}
	if p, ok := panelPrograms.Load(k); ok {
		return p.([]panelChunk)
	}
	p, _ := panelPrograms.LoadOrStore(k, pt.chunks(in))
	return p.([]panelChunk)
}

// chunksNibbles: Q4_0 and IQ4_NL blocks (f16 scale, 16 bytes of nibbles);
// chunk c of block b holds nibble bytes 4c..4c+3 (values 4c..4c+3 low,
// 16+4c.. high).
func chunksNibbles(in int) (p []panelChunk) {
	for b := range in / 32 {
		for c := range 4 {
			p = append(p, copyChunk(18*b+2+4*c, 320*b+64*c))
		}
	}
	return p
}

// chunksBytes: Q8_0 blocks (f16 scale, 32 signed bytes); chunk j holds
// values 4j..4j+3 plus 128.
func chunksBytes(in int) (p []panelChunk) {
	for b := range in / 32 {
		for j := range 8 {
			c := copyChunk(34*b+2+4*j, 576*b+64*j)
			c.xor = 0x80808080
			p = append(p, c)
		}
	}
	return p
}

// scalesBlocks: the f16 scale at the start of each 32-value block, after
// the block's chunks.
func scalesBlocks(panel, row []byte, lane, in int) {
	nb := in / 32
	size, stride := len(row)/nb, len(panel)/nb
	for b := range nb {
		putF32(panel, b*stride+stride-64+4*lane, f16(row[b*size:]))
	}
}

// putF32 stores v at panel[at:], bounds checked once: the scale writers
// run for every row of every panel a prompt packs.
func putF32(panel []byte, at int, v float32) {
	_ = panel[at+3]
	*(*float32)(unsafe.Pointer(&panel[at])) = v
}

// chunksIQ4_XS: IQ4_XS super-blocks (f16 d, 16 bits of high scale bits,
// four bytes of low ones, eight sub-blocks of 16 bytes of nibbles in
// IQ4_NL's order), laid out as IQ4_NL blocks.
func chunksIQ4_XS(in int) (p []panelChunk) {
	for sb := range in / 256 {
		for ib := range 8 {
			for c := range 4 {
				p = append(p, copyChunk(136*sb+8+16*ib+4*c, 320*(8*sb+ib)+64*c))
			}
		}
	}
	return p
}

// scalesIQ4_XS: each sub-block's d·(ls−32).
func scalesIQ4_XS(panel, row []byte, lane, in int) {
	const size, stride = 136, 4*64 + 64
	for b := range in / 256 {
		blk := row[b*size : b*size+size]
		d, sh := f16(blk), int32(blk[2])|int32(blk[3])<<8
		for ib := range 8 {
			ls := int32(blk[4+ib/2]>>(4*(ib%2))&0xF) | (sh>>(2*ib)&3)<<4
			putF32(panel, (8*b+ib)*stride+256+4*lane, d*float32(ls-32))
		}
	}
}

// chunksQ45_K: Q4_K super-blocks (f16 d and dmin, twelve bytes of 6-bit
// scales and minimums, 128 bytes of nibbles) or Q5_K ones (qh[32] before
// the nibbles). For each pair k of sub-blocks, chunk j holds nibble bytes
// 4j..4j+3 of the pair's 32 (low nibbles: the first sub-block's values
// 4j..4j+3, high: the second's); for Q5_K then qh >> 2k, so that bit 0 of
// each byte is sub-block 2k's fifth bit and bit 1 sub-block 2k+1's.
func chunksQ45_K(in int, fifth bool) (p []panelChunk) {
	size, chunks, qs := 144, 8, 16
	if fifth {
		size, chunks, qs = 176, 16, 48
	}
	stride := 64*chunks + 4*64
	for sb := range in / 256 {
		for k := range 4 {
			at := (4*sb + k) * stride
			for j := range 8 {
				p = append(p, copyChunk(size*sb+qs+32*k+4*j, at+64*j))
				if fifth {
					p = append(p, panelChunk{src: int32(size*sb + 16 + 4*j), dst: int32(at + 512 + 64*j), shift: int32(2 * k), mask: 0x03030303})
				}
			}
		}
	}
	return p
}

func chunksQ4_K(in int) []panelChunk { return chunksQ45_K(in, false) }
func chunksQ5_K(in int) []panelChunk { return chunksQ45_K(in, true) }

// scalesQ45_K: each sub-block's d·scale and dmin·min, after the pair's
// chunks.
func scalesQ45_K(panel, row []byte, lane, in int, fifth bool) {
	size, chunks := 144, 8
	if fifth {
		size, chunks = 176, 16
	}
	stride := 64*chunks + 4*64
	for b := range in / 256 {
		blk := row[b*size : b*size+size]
		d, dmin, scales := f16(blk), f16(blk[2:]), blk[4:16]
		for k := range 4 {
			at := (4*b+k)*stride + 64*chunks + 4*lane
			for h := range 2 {
				sc, m := quant.ScaleMinK4(2*k+h, scales)
				putF32(panel, at+128*h, d*float32(sc))
				putF32(panel, at+128*h+64, dmin*float32(m))
			}
		}
	}
}

func scalesQ4_K(panel, row []byte, lane, in int) { scalesQ45_K(panel, row, lane, in, false) }
func scalesQ5_K(panel, row []byte, lane, in int) { scalesQ45_K(panel, row, lane, in, true) }

// chunksQ6_K: Q6_K super-blocks (ql[128] low nibbles, qh[64] high bit
// pairs, sixteen int8 scales, f16 d); for each half, ql's 64 bytes as
// sixteen chunks, qh's 32 as eight.
func chunksQ6_K(in int) (p []panelChunk) {
	for sb := range in / 256 {
		for h := range 2 {
			at := (2*sb + h) * 2048
			for j := range 16 {
				p = append(p, copyChunk(210*sb+64*h+4*j, at+64*j))
			}
			for j := range 8 {
				p = append(p, copyChunk(210*sb+128+32*h+4*j, at+1024+64*j))
			}
		}
	}
	return p
}

// scalesQ6_K: d·scale of each sixteen values, after the half's chunks.
func scalesQ6_K(panel, row []byte, lane, in int) {
	const size, stride = 210, 2048
	for b := range in / 256 {
		blk := row[b*size : b*size+size]
		d := f16(blk[208:])
		for h := range 2 {
			for i := range 8 {
				putF32(panel, (2*b+h)*stride+1536+64*i+4*lane, d*float32(int8(blk[192+8*h+i])))
			}
		}
	}
}

// chunksQ3_K: Q3_K super-blocks (hmask[32], qs[64] of 2-bit values,
// twelve bytes of 6-bit scales, f16 d); for each half, its 32 bytes of qs
// as eight chunks, then hmask >> 4·half, so that bit g of each byte is
// group g's, as eight more.
func chunksQ3_K(in int) (p []panelChunk) {
	for sb := range in / 256 {
		for h := range 2 {
			at := (2*sb + h) * 1536
			for j := range 8 {
				p = append(p, copyChunk(110*sb+32+32*h+4*j, at+64*j),
					panelChunk{src: int32(110*sb + 4*j), dst: int32(at + 512 + 64*j), shift: int32(4 * h), mask: 0x0F0F0F0F})
			}
		}
	}
	return p
}

// scalesQ3_K: d·scale of each sixteen values.
func scalesQ3_K(panel, row []byte, lane, in int) {
	const size, stride = 110, 1536
	for b := range in / 256 {
		blk := row[b*size : b*size+size]
		d, scales := f16(blk[108:]), blk[96:108]
		for h := range 2 {
			for i := range 8 {
				putF32(panel, (2*b+h)*stride+1024+64*i+4*lane, d*float32(quant.ScaleQ3K(scales, 8*h+i)))
			}
		}
	}
}

// chunksQ2_K: Q2_K super-blocks (sixteen bytes of 4-bit scales and
// minimums, qs[64] of 2-bit values, f16 d and dmin); for each half, its 32
// bytes of qs as eight chunks.
func chunksQ2_K(in int) (p []panelChunk) {
	for sb := range in / 256 {
		for h := range 2 {
			for j := range 8 {
				p = append(p, copyChunk(84*sb+16+32*h+4*j, (2*sb+h)*1536+64*j))
			}
		}
	}
	return p
}

// scalesQ2_K: d·scale and dmin·min of each sixteen values.
func scalesQ2_K(panel, row []byte, lane, in int) {
	const size, stride = 84, 1536
	for b := range in / 256 {
		blk := row[b*size : b*size+size]
		d, dmin := f16(blk[80:]), f16(blk[82:])
		for h := range 2 {
			at := (2*b+h)*stride + 512 + 4*lane
			for i := range 8 {
				sc := blk[8*h+i]
				putF32(panel, at+64*i, d*float32(sc&0xF))
				putF32(panel, at+512+64*i, dmin*float32(sc>>4))
			}
		}
	}
}
