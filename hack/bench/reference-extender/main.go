// Command reference-extender is what hack/bench/scheduler_throughput.py measures mipart's
// extender against: the same protocol and the same watches, with no placement at all.
//
// It serves kube-scheduler's filter, prioritize and bind verbs (every node passes, every score
// is 0, bind POSTs a Binding that carries an allocation annotation) and keeps informers on the
// pods of mipart's scheduler and on GPUNodes, as mipart's extender does. It is written in Go
// with client-go (protobuf to the API server), so its cost on a machine is what any extender of
// this design costs there, whatever it decides; the difference from mipart's is mipart's.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

const allocationAnnotation = "mipart.io/allocation"

var gpunodes = schema.GroupVersionResource{Group: "mipart.io", Version: "v1alpha1", Resource: "gpunodes"}

// extenderArgs and bindingArgs are k8s.io/kube-scheduler/extender/v1's wire format: Go field
// names as keys, no JSON tags.
type extenderArgs struct {
	Pod       *corev1.Pod
	NodeNames *[]string
}

type bindingArgs struct {
	PodName, PodNamespace, PodUID, Node string
}

type hostPriority struct {
	Host  string
	Score int64
}

// allocations is what /debug/allocations reports: the pods that hold an allocation annotation,
// as the benchmark waits for none to be left between runs.
type allocations struct {
	mu    sync.Mutex
	nodes map[types.UID]string
}

func (a *allocations) update(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, held := pod.Annotations[allocationAnnotation]; held && pod.Spec.NodeName != "" {
		a.nodes[pod.UID] = pod.Spec.NodeName
	}
}

func (a *allocations) remove(obj any) {
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		a.mu.Lock()
		defer a.mu.Unlock()
		delete(a.nodes, pod.UID)
	}
}

func (a *allocations) list() []map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]map[string]string, 0, len(a.nodes))
	for uid, node := range a.nodes {
		out = append(out, map[string]string{"podUID": string(uid), "node": node})
	}
	return out
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8888", "address to serve the verbs on")
	statusListen := flag.String("status-listen", "", "a second address that serves the same, as mipart-extender's status port")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the scheduler's service account")
	schedulerName := flag.String("scheduler-name", "mipart-scheduler", "whose pods to watch")
	flag.Parse()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	// As mipart's extender: no client-side rate limit on the Bindings.
	config.QPS, config.Burst = 1000, 1000
	config.ContentType = "application/vnd.kubernetes.protobuf"
	clientset := kubernetes.NewForConfigOrDie(config)
	dynamicClient := dynamic.NewForConfigOrDie(config)

	held := &allocations{nodes: map[types.UID]string{}}
	pods := informers.NewSharedInformerFactoryWithOptions(clientset, 0,
		informers.WithTweakListOptions(func(options *metav1.ListOptions) {
			options.FieldSelector = "spec.schedulerName=" + *schedulerName
		})).Core().V1().Pods().Informer()
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    held.update,
		UpdateFunc: func(_, obj any) { held.update(obj) },
		DeleteFunc: held.remove,
	}); err != nil {
		log.Fatal(err)
	}
	nodes := dynamicinformer.NewDynamicSharedInformerFactory(dynamicClient, 0).
		ForResource(gpunodes).Informer()
	ctx := context.Background()
	go pods.Run(ctx.Done())
	go nodes.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced, nodes.HasSynced) {
		log.Fatal("caches did not sync")
	}

	http.HandleFunc("/filter", func(w http.ResponseWriter, r *http.Request) {
		var args extenderArgs
		if err := json.NewDecoder(r.Body).Decode(&args); err != nil || args.NodeNames == nil {
			reply(w, map[string]any{"Error": "bad ExtenderArgs"})
			return
		}
		reply(w, map[string]any{
			"NodeNames":                  *args.NodeNames,
			"FailedNodes":                map[string]string{},
			"FailedAndUnresolvableNodes": map[string]string{},
			"Error":                      "",
		})
	})
	http.HandleFunc("/prioritize", func(w http.ResponseWriter, r *http.Request) {
		var args extenderArgs
		if err := json.NewDecoder(r.Body).Decode(&args); err != nil || args.NodeNames == nil {
			reply(w, []hostPriority{})
			return
		}
		scores := make([]hostPriority, 0, len(*args.NodeNames))
		for _, name := range *args.NodeNames {
			scores = append(scores, hostPriority{Host: name})
		}
		reply(w, scores)
	})
	http.HandleFunc("/bind", func(w http.ResponseWriter, r *http.Request) {
		var args bindingArgs
		if err := json.NewDecoder(r.Body).Decode(&args); err != nil {
			reply(w, map[string]string{"Error": "bad ExtenderBindingArgs"})
			return
		}
		annotation, _ := json.Marshal(map[string]any{"node": args.Node, "partitions": []string{"0"}})
		binding := &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{
				Name:        args.PodName,
				Namespace:   args.PodNamespace,
				UID:         types.UID(args.PodUID),
				Annotations: map[string]string{allocationAnnotation: string(annotation)},
			},
			Target: corev1.ObjectReference{Kind: "Node", Name: args.Node},
		}
		message := ""
		if err := clientset.CoreV1().Pods(args.PodNamespace).Bind(r.Context(), binding, metav1.CreateOptions{}); err != nil {
			message = err.Error()
		}
		reply(w, map[string]string{"Error": message})
	})
	http.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	http.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {})
	http.HandleFunc("/debug/allocations", func(w http.ResponseWriter, _ *http.Request) { reply(w, held.list()) })
	log.Printf("serving on %s", *listen)
	if *statusListen != "" {
		go func() { log.Fatal(http.ListenAndServe(*statusListen, nil)) }()
	}
	log.Fatal(http.ListenAndServe(*listen, nil))
}

func reply(w http.ResponseWriter, body any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(body); err != nil {
		log.Printf("reply: %v", err)
	}
}
