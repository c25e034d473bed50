{{/* Names and labels. */}}
{{- define "st.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "st.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "st.labels" -}}
{{ include "st.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "st.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Whether the server asks for credentials (README "Security"). */}}
{{- define "st.auth" -}}
{{- if or .Values.auth.tokensSecret.name .Values.auth.oidc.jwks .Values.auth.tls.clientScopes -}}true{{- end -}}
{{- end -}}

{{/* The pod security context of the server and the workers: an unprivileged user, the store volume
     writable by its group. */}}
{{- define "st.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "st.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/* Secret files: every secret is a file under /run/secrets/topology/<purpose>/, mounted read-only
     from its Secret (mode 0440, group 10001). Each entry: purpose, secret, items (key -> path). */}}
{{- define "st.secretFiles" -}}
{{- $v := .Values -}}
{{- $files := list -}}
{{- if eq $v.store.backend "janusgraph" -}}
{{- with $v.store.janusgraph.passwordSecret.name }}{{ $files = append $files (dict "purpose" "janusgraph-password" "secret" . "items" (list $v.store.janusgraph.passwordSecret.key)) }}{{ end -}}
{{- with $v.store.janusgraph.caSecret.name }}{{ $files = append $files (dict "purpose" "janusgraph-ca" "secret" . "items" (list $v.store.janusgraph.caSecret.key)) }}{{ end -}}
{{- with $v.store.janusgraph.clientCertSecret }}{{ $files = append $files (dict "purpose" "janusgraph-client" "secret" . "items" (list "tls.crt" "tls.key")) }}{{ end -}}
{{- end -}}
{{- toJson $files -}}
{{- end -}}

{{- define "st.kafkaFiles" -}}
{{- $k := .Values.kafka -}}
{{- $files := list -}}
{{- if hasPrefix "SASL_" $k.securityProtocol -}}
{{- with $k.sasl.passwordSecret.name }}{{ $files = append $files (dict "purpose" "kafka-password" "secret" . "items" (list $k.sasl.passwordSecret.key)) }}{{ end -}}
{{- end -}}
{{- if hasSuffix "SSL" $k.securityProtocol -}}
{{- with $k.tls.caSecret.name }}{{ $files = append $files (dict "purpose" "kafka-ca" "secret" . "items" (list $k.tls.caSecret.key)) }}{{ end -}}
{{- with $k.tls.clientCertSecret }}{{ $files = append $files (dict "purpose" "kafka-client" "secret" . "items" (list "tls.crt" "tls.key")) }}{{ end -}}
{{- end -}}
{{- toJson $files -}}
{{- end -}}

{{- define "st.filePath" -}}
/run/secrets/topology/{{ .purpose }}/{{ .key }}
{{- end -}}

{{- define "st.secretVolumes" -}}
{{- range . }}
- name: {{ .purpose }}
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
    items:
      {{- range .items }}
      - {key: {{ . | quote }}, path: {{ . | quote }}}
      {{- end }}
{{- end }}
{{- end -}}

{{- define "st.secretMounts" -}}
{{- range . }}
- {name: {{ .purpose }}, mountPath: /run/secrets/topology/{{ .purpose }}, readOnly: true}
{{- end }}
{{- end -}}

{{/* KAFKA_* variables of every Kafka client (workers, serve --kafka, the agent's Kafka sink). */}}
{{- define "st.kafkaEnv" -}}
{{- $k := .Values.kafka -}}
- {name: KAFKA_BOOTSTRAP, value: {{ $k.bootstrap | quote }}}
{{- with $k.topicPrefix }}
- {name: TOPOLOGY_TOPIC_PREFIX, value: {{ . | quote }}}
{{- end }}
- {name: KAFKA_SECURITY_PROTOCOL, value: {{ $k.securityProtocol | quote }}}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
{{- if not (and $k.sasl.username $k.sasl.passwordSecret.name) }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.username and kafka.sasl.passwordSecret.name (a Secret holding the password)" $k.securityProtocol) }}
{{- end }}
- {name: KAFKA_SASL_MECHANISM, value: {{ $k.sasl.mechanism | quote }}}
- {name: KAFKA_SASL_USERNAME, value: {{ $k.sasl.username | quote }}}
- {name: KAFKA_SASL_PASSWORD_FILE, value: {{ include "st.filePath" (dict "purpose" "kafka-password" "key" $k.sasl.passwordSecret.key) }}}
{{- end }}
{{- if hasSuffix "SSL" $k.securityProtocol }}
{{- with $k.tls.caSecret.name }}
- {name: KAFKA_SSL_CA_FILE, value: {{ include "st.filePath" (dict "purpose" "kafka-ca" "key" $k.tls.caSecret.key) }}}
{{- end }}
{{- with $k.tls.clientCertSecret }}
- {name: KAFKA_SSL_CERT_FILE, value: {{ include "st.filePath" (dict "purpose" "kafka-client" "key" "tls.crt") }}}
- {name: KAFKA_SSL_KEY_FILE, value: {{ include "st.filePath" (dict "purpose" "kafka-client" "key" "tls.key") }}}
{{- end }}
- {name: KAFKA_SSL_CHECK_HOSTNAME, value: {{ $k.tls.checkHostname | quote }}}
{{- end }}
{{- end -}}

{{/* Store variables: the embedded directory on the volume, or JanusGraph with its credentials. */}}
{{- define "st.storeEnv" -}}
{{- $s := .Values.store -}}
- {name: TOPOLOGY_STORE, value: {{ $s.backend | quote }}}
- {name: TOPOLOGY_TRACE_STORE_SIZE, value: {{ $s.traceStoreSize | quote }}}
{{- if eq $s.backend "embedded" }}
- {name: TOPOLOGY_DATA_DIR, value: /data}
{{- else if eq $s.backend "janusgraph" }}
{{- $j := $s.janusgraph }}
- {name: JANUSGRAPH_URL, value: {{ $j.url | quote }}}
{{- if or $j.username $j.passwordSecret.name }}
{{- if not (and $j.username $j.passwordSecret.name) }}
{{- fail "store.janusgraph.username and store.janusgraph.passwordSecret.name go together" }}
{{- end }}
- {name: JANUSGRAPH_USERNAME, value: {{ $j.username | quote }}}
- {name: JANUSGRAPH_PASSWORD_FILE, value: {{ include "st.filePath" (dict "purpose" "janusgraph-password" "key" $j.passwordSecret.key) }}}
{{- end }}
{{- with $j.caSecret.name }}
- {name: JANUSGRAPH_CA_FILE, value: {{ include "st.filePath" (dict "purpose" "janusgraph-ca" "key" $j.caSecret.key) }}}
{{- end }}
{{- with $j.clientCertSecret }}
- {name: JANUSGRAPH_CERT_FILE, value: {{ include "st.filePath" (dict "purpose" "janusgraph-client" "key" "tls.crt") }}}
- {name: JANUSGRAPH_KEY_FILE, value: {{ include "st.filePath" (dict "purpose" "janusgraph-client" "key" "tls.key") }}}
{{- end }}
{{- else }}
{{- fail (printf "store.backend must be embedded or janusgraph, got %q" $s.backend) }}
{{- end }}
{{- end -}}

{{/* Extra variables from a values map, in a stable order. */}}
{{- define "st.extraEnv" -}}
{{- range $name, $value := . }}
- {name: {{ $name }}, value: {{ $value | toString | quote }}}
{{- end }}
{{- end -}}

{{- define "st.promAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- if .scheme }}
prometheus.io/scheme: {{ .scheme }}
{{- end }}
{{- end -}}
