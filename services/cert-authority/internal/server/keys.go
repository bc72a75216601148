package server

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
)

// pkcs8PEM encodes a private key as PEM PKCS#8.
func pkcs8PEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
