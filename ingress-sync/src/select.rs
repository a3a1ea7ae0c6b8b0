//! Which Ingresses are ours (pure).
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// How we recognise our Ingresses.
#[derive(Debug, Clone)]
pub struct Selector {
    /// `--controller-name`: IngressClasses with this `spec.controller` are ours.
    pub controller_name: String,
    /// `--ingress-class`: the legacy annotation's value that selects us.
    pub ingress_class: String,
}

/// The IngressClasses that name our controller: their names, and whether one of them is
/// marked as the cluster's default class.
#[derive(Debug, Default)]
pub struct OurClasses {
    pub names: Vec<String>,
    pub default: bool,
}

impl Selector {
    pub fn our_classes(&self, classes: &[IngressClass]) -> OurClasses {
        let mut ours = OurClasses::default();
        for c in classes {
            let controller = c.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller != Some(self.controller_name.as_str()) {
                continue;
            }
            if let Some(name) = &c.metadata.name {
                ours.names.push(name.clone());
            }
            let is_default = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            ours.default |= is_default;
        }
        ours
    }

    /// The legacy annotation decides when present; else `spec.ingressClassName`; an
    /// Ingress with neither is ours when one of our classes is the default class.
    pub fn is_ours(&self, ingress: &Ingress, classes: &OurClasses) -> bool {
        let annotation = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
        if let Some(a) = annotation {
            return *a == self.ingress_class;
        }
        match ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_ref())
        {
            Some(name) => classes.names.contains(name),
            None => classes.default,
        }
    }
}
