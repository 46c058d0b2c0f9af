package quant

//go:generate sh -c "cd ../runtime/cpu/asm && LQC_ASM_SET=quant go run . -pkg quant -out ../../../quant/qkx_amd64.s -stubs ../../../quant/qkx_stubs_amd64.go"
