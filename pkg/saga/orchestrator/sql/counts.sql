-- counts: sagas by definition and status, for the metrics.
SELECT definition, status, count(*) FROM {{.schema}}.saga_instances GROUP BY definition, status
