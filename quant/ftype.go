package quant

import (
	"fmt"
	"sort"
	"strings"
)

// FileType is llama.cpp's llama_ftype: the quantization a whole model file
// asks for, written to GGUF as general.file_type. Most files mix types
// (see Plan); the file type names the mix.
type FileType uint32

// llama_ftype values (llama.h). Only the ones lqc can produce are listed.
const (
	FileAllF32       FileType = 0
	FileMostlyF16    FileType = 1
	FileMostlyQ4_0   FileType = 2
	FileMostlyQ4_1   FileType = 3
	FileMostlyQ8_0   FileType = 7
	FileMostlyQ5_0   FileType = 8
	FileMostlyQ5_1   FileType = 9
	FileMostlyQ2_K   FileType = 10
	FileMostlyQ3_K_S FileType = 11
	FileMostlyQ3_K_M FileType = 12
	FileMostlyQ3_K_L FileType = 13
	FileMostlyQ4_K_S FileType = 14
	FileMostlyQ4_K_M FileType = 15
	FileMostlyQ5_K_S FileType = 16
	FileMostlyQ5_K_M FileType = 17
	FileMostlyQ6_K   FileType = 18
	FileMostlyIQ4_NL FileType = 25
	FileMostlyIQ4_XS FileType = 30
	FileMostlyBF16   FileType = 32
)

type fileTypeInfo struct {
	name string // llama-quantize's name for it
	base Type   // the type most tensors get
}

var fileTypes = map[FileType]fileTypeInfo{
	FileAllF32:       {"F32", F32},
	FileMostlyF16:    {"F16", F16},
	FileMostlyBF16:   {"BF16", BF16},
	FileMostlyQ8_0:   {"Q8_0", Q8_0},
	FileMostlyQ4_0:   {"Q4_0", Q4_0},
	FileMostlyQ4_1:   {"Q4_1", Q4_1},
	FileMostlyQ5_0:   {"Q5_0", Q5_0},
	FileMostlyQ5_1:   {"Q5_1", Q5_1},
	FileMostlyQ2_K:   {"Q2_K", Q2_K},
	FileMostlyQ3_K_S: {"Q3_K_S", Q3_K},
	FileMostlyQ3_K_M: {"Q3_K_M", Q3_K},
	FileMostlyQ3_K_L: {"Q3_K_L", Q3_K},
	FileMostlyQ4_K_S: {"Q4_K_S", Q4_K},
	FileMostlyQ4_K_M: {"Q4_K_M", Q4_K},
	FileMostlyQ5_K_S: {"Q5_K_S", Q5_K},
	FileMostlyQ5_K_M: {"Q5_K_M", Q5_K},
	FileMostlyQ6_K:   {"Q6_K", Q6_K},
	FileMostlyIQ4_NL: {"IQ4_NL", IQ4_NL},
	FileMostlyIQ4_XS: {"IQ4_XS", IQ4_XS},
}

// Aliases users may type for --quant, beside the llama-quantize names.
// "q8"/"int8" and "q4"/"int4" name the recommended 8- and 4-bit mixes;
// q3_k, q4_k and q5_k are llama-quantize's names for the _M mixes.
var fileTypeAliases = map[string]FileType{
	"q8":   FileMostlyQ8_0,
	"int8": FileMostlyQ8_0,
	"q4":   FileMostlyQ4_K_M,
	"int4": FileMostlyQ4_K_M,
	"q3_k": FileMostlyQ3_K_M,
	"q4_k": FileMostlyQ4_K_M,
	"q5_k": FileMostlyQ5_K_M,
}

func (f FileType) String() string {
	if i, ok := fileTypes[f]; ok {
		return i.name
	}
	return fmt.Sprintf("ftype(%d)", uint32(f))
}

// Base is the type the mix gives ordinary weight matrices.
func (f FileType) Base() Type { return fileTypes[f].base }

// ParseFileType accepts llama-quantize's names ("Q4_0", "q8_0", "f16") and
// the aliases q8, q4, int8 and int4.
func ParseFileType(s string) (FileType, error) {
	low := strings.ToLower(s)
	if f, ok := fileTypeAliases[low]; ok {
		return f, nil
	}
	for f, i := range fileTypes {
		if strings.ToLower(i.name) == low {
			return f, nil
		}
	}
	return 0, fmt.Errorf("unknown quantization %q (want one of %s)", s, strings.Join(FileTypeNames(), ", "))
}

// FileTypeNames lists the accepted --quant values, aliases last.
func FileTypeNames() []string {
	var names []string
	for _, i := range fileTypes {
		names = append(names, strings.ToLower(i.name))
	}
	sort.Strings(names)
	var aliases []string
	for a := range fileTypeAliases {
		aliases = append(aliases, a)
	}
	sort.Strings(aliases)
	return append(names, aliases...)
}
