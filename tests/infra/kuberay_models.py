"""Strict pydantic models of the subset of the KubeRay CRDs (ray.io/v1) and core/v1 the manifests use.

Written from KubeRay's API types (ray-operator/apis/ray/v1: raycluster_types.go, rayjob_types.go) and
the Kubernetes core/v1 PodSpec; only the fields this project needs, with ``extra="forbid"`` so a typo
or a field in the wrong place fails like the API server's structural-schema pruning would warn.
A manifest that uses a new field needs that field added here first, deliberately.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Name = Annotated[str, StringConstraints(pattern=DNS1123, max_length=63)]
# Kubernetes resource.Quantity (decimal or binary suffixes) given as a string, or a plain integer.
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


class Strict(BaseModel):
    """Base: unknown keys are errors, types are not coerced (a YAML int is not a string)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ObjectMeta(Strict):
    name: Name
    namespace: Name | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class SecretKeySelector(Strict):
    name: Name
    key: str
    optional: bool | None = None


class EnvVarSource(Strict):
    secretKeyRef: SecretKeySelector


class EnvVar(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    value: str | None = None
    valueFrom: EnvVarSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.valueFrom is None):
            raise ValueError(f"env {self.name}: exactly one of value / valueFrom")
        return self


class ResourceRequirements(Strict):
    requests: dict[str, str | int] | None = None
    limits: dict[str, str | int] | None = None

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, v: dict[str, str | int] | None) -> dict[str, str | int] | None:
        for key, q in (v or {}).items():
            if isinstance(q, str) and not QUANTITY.match(q):
                raise ValueError(f"{key}: {q!r} is not a Kubernetes quantity")
        return v


class ContainerPort(Strict):
    containerPort: Annotated[int, Field(ge=1, le=65535)]
    name: Annotated[str, StringConstraints(max_length=15)] | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None


class Container(Strict):
    name: Name
    image: str
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    ports: list[ContainerPort] | None = None
    resources: ResourceRequirements | None = None


class Toleration(Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class PodSpec(Strict):
    serviceAccountName: Name | None = None
    restartPolicy: Literal["Always", "OnFailure", "Never"] | None = None
    nodeSelector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    containers: Annotated[list[Container], Field(min_length=1)]


class PodTemplateSpec(Strict):
    metadata: ObjectMeta | None = None
    spec: PodSpec


class AutoscalerOptions(Strict):
    idleTimeoutSeconds: Annotated[int, Field(ge=0)] | None = None
    upscalingMode: Literal["Default", "Aggressive", "Conservative"] | None = None
    resources: ResourceRequirements | None = None
    env: list[EnvVar] | None = None
    image: str | None = None
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = None


class AuthOptions(Strict):
    mode: Literal["disabled", "token"]
    secretName: Name | None = None


class HeadGroupSpec(Strict):
    serviceType: Literal["ClusterIP", "NodePort", "LoadBalancer"] | None = None
    enableIngress: bool | None = None
    rayStartParams: dict[str, str]
    template: PodTemplateSpec


class WorkerGroupSpec(Strict):
    groupName: Name
    replicas: Annotated[int, Field(ge=0)] | None = None
    minReplicas: Annotated[int, Field(ge=0)]
    maxReplicas: Annotated[int, Field(ge=0)]
    numOfHosts: Annotated[int, Field(ge=1)] | None = None
    rayStartParams: dict[str, str]
    template: PodTemplateSpec

    @model_validator(mode="after")
    def _bounds(self) -> WorkerGroupSpec:
        if self.minReplicas > self.maxReplicas:
            raise ValueError(
                f"{self.groupName}: minReplicas {self.minReplicas} > maxReplicas {self.maxReplicas}"
            )
        if self.replicas is not None and not self.minReplicas <= self.replicas <= self.maxReplicas:
            raise ValueError(f"{self.groupName}: replicas {self.replicas} outside [min, max]")
        return self


class RayClusterSpec(Strict):
    rayVersion: str | None = None
    authOptions: AuthOptions | None = None
    enableInTreeAutoscaling: bool | None = None
    autoscalerOptions: AutoscalerOptions | None = None
    headServiceAnnotations: dict[str, str] | None = None
    suspend: bool | None = None
    headGroupSpec: HeadGroupSpec
    workerGroupSpecs: list[WorkerGroupSpec] | None = None

    @model_validator(mode="after")
    def _unique_groups(self) -> RayClusterSpec:
        names = [g.groupName for g in self.workerGroupSpecs or []]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate worker group names: {names}")
        return self


class RayCluster(Strict):
    apiVersion: Literal["ray.io/v1"]
    kind: Literal["RayCluster"]
    metadata: ObjectMeta
    spec: RayClusterSpec


class SubmitterConfig(Strict):
    backoffLimit: Annotated[int, Field(ge=0)] | None = None


class RayJobSpec(Strict):
    entrypoint: Annotated[str, StringConstraints(min_length=1)]
    runtimeEnvYAML: str | None = None
    jobId: str | None = None
    metadata: dict[str, str] | None = None
    clusterSelector: dict[str, str] | None = None
    rayClusterSpec: RayClusterSpec | None = None
    submissionMode: Literal["K8sJobMode", "HTTPMode", "InteractiveMode"] | None = None
    submitterPodTemplate: PodTemplateSpec | None = None
    submitterConfig: SubmitterConfig | None = None
    entrypointNumCpus: Annotated[float, Field(ge=0)] | None = None
    entrypointNumGpus: Annotated[float, Field(ge=0)] | None = None
    entrypointResources: str | None = None
    activeDeadlineSeconds: Annotated[int, Field(gt=0)] | None = None
    backoffLimit: Annotated[int, Field(ge=0)] | None = None
    shutdownAfterJobFinishes: bool | None = None
    ttlSecondsAfterFinished: Annotated[int, Field(ge=0)] | None = None
    suspend: bool | None = None

    @model_validator(mode="after")
    def _cluster_source(self) -> RayJobSpec:
        if (self.clusterSelector is None) == (self.rayClusterSpec is None):
            raise ValueError("exactly one of clusterSelector / rayClusterSpec")
        if self.runtimeEnvYAML is not None and not isinstance(yaml.safe_load(self.runtimeEnvYAML), dict):
            raise ValueError("runtimeEnvYAML must be a YAML mapping")
        if self.submitterPodTemplate is not None and self.submitterPodTemplate.spec.restartPolicy != "Never":
            raise ValueError("the submitter pod template needs restartPolicy: Never")
        return self


class RayJob(Strict):
    apiVersion: Literal["ray.io/v1"]
    kind: Literal["RayJob"]
    metadata: ObjectMeta
    spec: RayJobSpec


class Namespace(Strict):
    apiVersion: Literal["v1"]
    kind: Literal["Namespace"]
    metadata: ObjectMeta


class ServiceAccount(Strict):
    apiVersion: Literal["v1"]
    kind: Literal["ServiceAccount"]
    metadata: ObjectMeta


MODELS: dict[str, type[Strict]] = {
    "RayCluster": RayCluster,
    "RayJob": RayJob,
    "Namespace": Namespace,
    "ServiceAccount": ServiceAccount,
}


def validate_manifest(doc: dict[str, Any]) -> Strict:
    """Validate one manifest document against the model of its ``kind`` (unknown kinds are errors)."""
    kind = doc.get("kind")
    if kind not in MODELS:
        raise ValueError(f"no schema for kind {kind!r}; known: {sorted(MODELS)}")
    return MODELS[kind].model_validate(doc)
