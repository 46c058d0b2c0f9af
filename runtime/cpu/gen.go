package cpu

//go:generate sh -c "cd asm && go run . -pkg cpu -out ../dot_amd64.s -stubs ../dot_stubs_amd64.go"
//go:generate sh -c "cd asm && go run ./neon -pkg cpu -out ../dot_arm64.s -stubs ../dot_stubs_arm64.go"
