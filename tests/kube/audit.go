package kube

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// AuditMetadata is an audit policy that records the metadata (user, verb,
// object reference, response code) of every request once it completes.
const AuditMetadata = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
`

// AuditPolicyForGroups is an audit policy at level Metadata for the
// requests of users in any of groups (e.g. "system:serviceaccounts:osm-system")
// and none for everyone else, which keeps the log to what a test reads.
func AuditPolicyForGroups(groups ...string) string {
	b, _ := json.Marshal(groups)
	return fmt.Sprintf(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: %s
  - level: None
`, b)
}

// AuditEvent is the part of an audit.k8s.io/v1 Event the tests read.
type AuditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	RequestURI string `json:"requestURI"`
	Verb       string `json:"verb"`
	User       struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	// ObjectRef is nil for a non-resource request (/api, /version, ...).
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
		APIVersion  string `json:"apiVersion"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code    int32  `json:"code"`
		Message string `json:"message"`
	} `json:"responseStatus"`
	Annotations map[string]string `json:"annotations"`
}

// auditArgs writes policy into the data dir and returns the kubebox flags
// that pass the audit flags on to the apiserver.
func (c *Cluster) auditArgs(policy string) ([]string, error) {
	file := filepath.Join(c.dataDir, "audit-policy.yaml")
	if err := os.WriteFile(file, []byte(policy), 0o600); err != nil {
		return nil, err
	}
	c.auditLog = filepath.Join(c.dataDir, "logs", "audit.log")
	return []string{
		"--apiserver-arg=--audit-policy-file=" + file,
		"--apiserver-arg=--audit-log-path=" + c.auditLog,
		"--apiserver-arg=--audit-log-format=json",
		// Blocking: each event is written before its response is sent,
		// so a test reads every request it has seen answered.
		"--apiserver-arg=--audit-log-mode=blocking",
	}, nil
}

// AuditLogPath returns the apiserver's audit log, or "" when the cluster
// was started without Options.AuditPolicy.
func (c *Cluster) AuditLogPath() string { return c.auditLog }

// AuditOffset returns the audit log's current size: pass it to AuditEvents
// to read only the events written after this point.
func (c *Cluster) AuditOffset() (int64, error) {
	if c.auditLog == "" {
		return 0, errors.New("the cluster has no audit log: start it with Options.AuditPolicy")
	}
	fi, err := os.Stat(c.auditLog)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// AuditEvents returns the audit events written from byte offset on (0:
// all), in the order the apiserver wrote them.
func (c *Cluster) AuditEvents(offset int64) ([]AuditEvent, error) {
	if c.auditLog == "" {
		return nil, errors.New("the cluster has no audit log: start it with Options.AuditPolicy")
	}
	f, err := os.Open(c.auditLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		var e AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// The apiserver may be writing the last line right now.
			if len(sc.Bytes()) > 0 && sc.Bytes()[len(sc.Bytes())-1] != '}' {
				break
			}
			return nil, fmt.Errorf("audit log %s, line %d after offset %d: %w", c.auditLog, line, offset, err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
