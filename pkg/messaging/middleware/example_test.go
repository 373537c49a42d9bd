package middleware_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/schemas"
)

// A consumer with the standard stack: a message that is not an envelope
// goes to the dead-letter topic with the reason, and the handler never sees
// it. A Go channel Pub/Sub stands in for Kafka here.
func ExampleStandard() {
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer pubsub.Close()
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{FS: schemas.FS()})
	if err != nil {
		panic(err)
	}
	mws, err := middleware.Standard(middleware.StackConfig{DeadLetterPublisher: pubsub, Schemas: reg})
	if err != nil {
		panic(err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		panic(err)
	}
	router.AddMiddleware(mws...)
	router.AddConsumerHandler("orders", "orders", pubsub, func(msg *message.Message) error {
		env, _ := middleware.EnvelopeFromContext(msg.Context())
		fmt.Println("handled", env.Type)
		return nil
	})
	dead, err := pubsub.Subscribe(context.Background(), "orders.dlq")
	if err != nil {
		panic(err)
	}
	go func() { _ = router.Run(context.Background()) }()
	defer router.Close()
	<-router.Running()

	if err := pubsub.Publish("orders", message.NewMessage("m-1", []byte("not an envelope"))); err != nil {
		panic(err)
	}
	dl := <-dead
	dl.Ack()
	fmt.Println(dl.UUID, "dead-lettered:", dl.Metadata.Get(messaging.HeaderDLQReason))
	// Output:
	// m-1 dead-lettered: messaging: cannot decode message: ce_specversion: missing
}

// An HTTP handler starts a business transaction: the first message gets the
// request's correlation id. A handler of that message stamps what it emits
// with its origin.
func ExampleOrigin_Stamp() {
	ctx := middleware.WithCorrelationID(context.Background(), "req-42")
	first := message.NewMessage("msg-1", nil)
	middleware.StampContext(ctx, first)

	second := message.NewMessage("msg-2", nil)
	middleware.OriginOf(first).Stamp(second)

	fmt.Println(first.Metadata.Get(messaging.HeaderCorrelationID), first.Metadata.Get(messaging.HeaderCausationID) == "")
	fmt.Println(second.Metadata.Get(messaging.HeaderCorrelationID), second.Metadata.Get(messaging.HeaderCausationID))
	// Output:
	// req-42 true
	// req-42 msg-1
}
