package main

import (
	"encoding/pem"

	"google.golang.org/protobuf/types/known/anypb"
)

type anypbAny = anypb.Any

func pemDecode(b []byte) (*pem.Block, []byte) { return pem.Decode(b) }
