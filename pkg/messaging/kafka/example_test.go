package kafka_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
)

// Example publishes a keyed message and reads it back as a member of a
// consumer group. It runs against an in-process embedded broker, so that it
// needs nothing else; point Brokers at a Kafka cluster instead.
func Example() {
	// The topic is provisioned beforehand, as on a real cluster (package
	// topic): the Subscriber never creates topics.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "sales.orders"))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	client := kafka.ClientConfig{Brokers: cluster.ListenAddrs()}

	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		ClientConfig:  client,
		ConsumerGroup: "billing",
	})
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: client})
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	msg := message.NewMessage("3f0c1e7a-0d2b-4d5e-9a43-5b8f2c9d6e11", []byte(`{"total":42}`))
	msg.Metadata.Set(messaging.HeaderType, "sales.order.placed")
	msg.Metadata.Set(messaging.MetadataPartitionKey, "order-42") // the record key
	if err := pub.Publish("sales.orders", msg); err != nil {
		panic(err)
	}

	msgs, err := sub.Subscribe(context.Background(), "sales.orders")
	if err != nil {
		panic(err)
	}
	got := <-msgs
	fmt.Println(got.UUID)
	fmt.Println(got.Metadata.Get(messaging.HeaderType), got.Metadata.Get(messaging.MetadataPartitionKey), string(got.Payload))
	fmt.Println("from", got.Metadata.Get(messaging.MetadataKafkaTopic), "offset", got.Metadata.Get(messaging.MetadataKafkaOffset))
	got.Ack() // the next message of its partition comes after this

	// Output:
	// 3f0c1e7a-0d2b-4d5e-9a43-5b8f2c9d6e11
	// sales.order.placed order-42 {"total":42}
	// from sales.orders offset 0
}
