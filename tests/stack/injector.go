package stack

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// injectorService makes the injector's webhook Service an ExternalName for
// localhost, idempotently.
func (m *Mesh) injectorService(ctx context.Context) error {
	svcs := m.o.Cluster.Clientset().CoreV1().Services(m.o.Namespace)
	spec := corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"}
	cur, err := svcs.Get(ctx, InjectorService, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = svcs.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: InjectorService}, Spec: spec}, metav1.CreateOptions{})
	case err == nil && (cur.Spec.Type != spec.Type || cur.Spec.ExternalName != spec.ExternalName):
		cur.Spec = spec
		_, err = svcs.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("injector Service: %w", err)
	}
	return nil
}

// waitWebhookConfig waits until the injector has written its webhook
// configuration, from which on the apiserver calls it.
func (m *Mesh) waitWebhookConfig(ctx context.Context) error {
	cfgs := m.o.Cluster.Clientset().AdmissionregistrationV1().MutatingWebhookConfigurations()
	err := Eventually(ctx, 30*time.Second, func() error {
		_, err := cfgs.Get(ctx, m.WebhookConfigName(), metav1.GetOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("the injector's webhook configuration: %w", err)
	}
	return nil
}
