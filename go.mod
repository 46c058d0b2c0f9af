module github.com/lqc-dev/lqc

go 1.26.0

require golang.org/x/sys v0.50.0

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/spf13/pflag v1.1.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
