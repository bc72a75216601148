package box

import (
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
)

// writeKubeconfig writes a self-contained admin kubeconfig: the CA is
// embedded and the user authenticates with the static admin token.
func writeKubeconfig(path, server, caFile, token string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubebox
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: kubebox
  context:
    cluster: kubebox
    user: admin
current-context: kubebox
`, strconv.Quote(server), base64.StdEncoding.EncodeToString(ca), strconv.Quote(token))
	return writeFileAtomic(path, []byte(cfg), 0o600)
}
